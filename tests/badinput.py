"""The bad-input catalogue: every input the tool reads, broken in every way we know.

Each :class:`Case` builds one broken input in a fresh directory and returns a thunk that feeds
it to the library function that reads it.  ``tests/test_bad_input.py`` runs every case and
checks that it raises :class:`InputError` (nothing else), with a one-line message holding the
``expect`` fragments (what and where), and that nothing new is left in the directory.  CLI
cases (``argv``) go through ``moe-netsim`` and must exit with code 2 and one line on stderr.

The cases live in ``tests/badinput_<topic>.py`` (traces, clusters, importers, cli), imported
at the end of this module in catalogue order.  Adding a case for a new input is one call to
:func:`case` (or :func:`cli_case`) in the module of its topic.  The error
catalogue docs/reference/errors.md is generated from this list (``make docs``, see
``tests/error_catalogue.py``), and ``tests/test_bad_input.py`` fails when the page and a case's
message disagree.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traces import ModelSpec, RoutingTrace, TraceMeta
from traces.io import META_KEY, read_trace, write_trace

Thunk = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    """One broken input.  ``setup(dir)`` writes files and returns the call that must fail."""

    input: str
    name: str
    expect: tuple[str, ...]
    setup: Callable[[Path], Thunk] | None = None
    argv: tuple[str, ...] = ()  # CLI case: arguments, "{dir}" is the case directory
    subprocess: bool = False  # also run this CLI case as `python -m experiments` (slow)
    must_not_exist: tuple[str, ...] = field(default=())  # CLI outputs that must not appear

    @property
    def id(self) -> str:
        return f"{self.input}: {self.name}"

    @property
    def is_cli(self) -> bool:
        return self.setup is None


CASES: list[Case] = []


def case(input: str, name: str, *expect: str) -> Callable[[Callable[[Path], Thunk]], Any]:
    """Decorator registering ``setup`` as a library-level case."""

    def register(setup: Callable[[Path], Thunk]) -> Callable[[Path], Thunk]:
        CASES.append(Case(input, name, tuple(expect), setup=setup))
        return setup

    return register


def cli_case(
    name: str, argv: list[str], *expect: str, subprocess: bool = False,
    must_not_exist: tuple[str, ...] = (),
) -> None:
    CASES.append(
        Case("command line", name, tuple(expect), argv=tuple(argv), subprocess=subprocess,
             must_not_exist=must_not_exist)
    )


# ---------------------------------------------------------------------------------------------
# Builders of valid inputs that the cases then break.

TINY = ModelSpec("tiny", (1, 2), 8, 0, 2, 16)


def tiny_trace(n: int = 6) -> RoutingTrace:
    experts = np.stack([np.arange(n) % 8, (np.arange(n) + 1) % 8], axis=1)  # distinct pairs
    return RoutingTrace(
        meta=TraceMeta(model=TINY, source="badinput"),
        experts=np.repeat(experts[:, None, :], 2, axis=1).astype(np.uint8),
        seq_id=np.arange(n, dtype=np.int64),
        position=np.zeros(n, dtype=np.int32),
        origin_gpu=np.zeros(n, dtype=np.int32),
        step=np.zeros(n, dtype=np.int32),
    )


def valid_trace_file(d: Path, name: str = "trace.parquet") -> Path:
    return write_trace(d / name, tiny_trace())


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def _with_meta(d: Path, meta: dict[str, Any] | str, name: str = "trace.parquet") -> Path:
    p = valid_trace_file(d, name)
    t = pq.read_table(p)
    raw = meta if isinstance(meta, str) else json.dumps(meta)
    _rewrite(p, t.replace_schema_metadata({META_KEY: raw.encode()}))
    return p


def _meta_dict(**model_changes: Any) -> dict[str, Any]:
    d = json.loads(TraceMeta(model=TINY).to_json())
    d["model"].update(model_changes)
    return d


def _with_column(d: Path, col: str, values: pa.Array, name: str = "trace.parquet") -> Path:
    p = valid_trace_file(d, name)
    t = pq.read_table(p)
    i = t.schema.get_field_index(col)
    t = t.set_column(i, pa.field(col, values.type), values)
    _rewrite(p, t.replace_schema_metadata(pq.read_schema(p).metadata))
    return p


def _experts_column(rows: list[list[int]] | list[list[int] | None], fixed: bool = True) -> pa.Array:
    if fixed:
        return pa.array(rows, type=pa.list_(pa.uint8(), 2))
    return pa.array(rows, type=pa.list_(pa.uint8()))


def _read(p: Path) -> Thunk:
    return lambda: read_trace(p)

def _cluster_dict() -> dict[str, Any]:
    """Two servers of two GPUs behind one switch."""
    nodes: list[dict[str, Any]] = [{"name": "sw", "kind": "switch", "tier": "edge"}]
    links: list[dict[str, Any]] = []
    for s in range(2):
        nodes.append({"name": f"s{s}", "kind": "server"})
        links.append({"a": f"s{s}", "b": "sw", "bandwidth_bytes_per_s": 5e10})
        for g in range(2):
            nodes.append({"name": f"s{s}.g{g}", "kind": "gpu", "server": f"s{s}"})
            links.append({"a": f"s{s}.g{g}", "b": f"s{s}", "bandwidth_bytes_per_s": 4.5e11,
                          "weight": 0.0, "tier": "nvlink"})
    return {"format": "moe-netsim-cluster", "version": 1, "name": "c", "nodes": nodes,
            "links": links}


# The cases, in catalogue order (each module registers its cases into CASES on import).  They
# import this module as ``badinput``: one module under both names, however it was imported.
sys.modules.setdefault("badinput", sys.modules[__name__])
for _module in ['badinput_traces', 'badinput_clusters', 'badinput_importers', 'badinput_cli',
                'badinput_fabrics', 'badinput_failures']:
    importlib.import_module(f"{__package__}.{_module}" if __package__ else _module)



def prepare_cli_dir(d: Path) -> None:
    """Files the CLI cases refer to: an existing run directory, a plain file and valid inputs
    (a trace, a cluster, a layout, a model JSON, a vLLM array) that one argument then breaks."""
    (d / "existing").mkdir()
    (d / "existing" / "keep.txt").write_text("old run\n")
    (d / "afile").write_text("not a directory\n")
    write_trace(d / "trace.parquet", tiny_trace())
    (d / "cluster.json").write_text(json.dumps(_cluster_dict()))
    (d / "tiny.json").write_text(json.dumps(TINY.to_dict()))
    rows = [(layer, e, e % 4) for layer in (1, 2) for e in range(8)]
    pd.DataFrame(rows, columns=["layer", "expert", "gpu"]).to_csv(d / "layout.csv", index=False)
    rows[3] = (1, 3, 9)
    pd.DataFrame(rows, columns=["layer", "expert", "gpu"]).to_csv(d / "layout9.csv", index=False)
    _with_column(d, "experts_L2", _experts_column([[0, 1]] * 5 + [[200, 1]]), "badexpert.parquet")
    np.save(d / "req.npy", tiny_trace().experts.astype(np.int16))
    (d / "study.toml").write_text(
        '[topology]\nfamily = "fat-tree"\nparams = { k = 4, num_servers = 2 }\n'
        '[trace]\nsource = "trace.parquet"\nfit_tokens = 3\nreplay_tokens = 3\n')
    np.save(d / "bad.npy", tiny_trace().experts.astype(np.float32))
    (d / "asym.json").write_text('{"rank_cost_matrix": [[0, 1], [2, 0]]}')


# ---------------------------------------------------------------------------------------------


def run_case(c: Case, d: Path) -> str:
    """Run a library case in ``d``; return its message (InputError) or raise what it raised."""
    from traces.infra.errors import InputError

    assert c.setup is not None
    thunk = c.setup(d)
    try:
        thunk()
    except InputError as exc:
        return str(exc)
    raise AssertionError(f"{c.id}: no InputError raised")


def run_cli_case(c: Case, d: Path) -> tuple[int, str]:
    """Run a CLI case in-process; return (exit code, stderr)."""
    prepare_cli_dir(d)
    return run_cli([a.replace("{dir}", str(d)) for a in c.argv])


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Run the CLI in-process on ``argv``, stdout discarded; return (exit code, stderr)."""
    import contextlib
    import io

    from experiments.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


def message_of(c: Case) -> str:
    """The message a user sees for the case, with the temporary directory removed."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if c.is_cli:
            _, text = run_cli_case(c, d)
        else:
            text = run_case(c, d)
    text = text.strip().replace(f"{d}/", "").replace(str(d), ".")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.parse_args(argv)
    for c in CASES:
        print(c.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
