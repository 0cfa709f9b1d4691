"""Concatenation of traces one after another in time: a workload shift with continuing steps.

Input i's steps are shifted to start one after input i-1's last step, and its sequence ids to
start after input i-1's largest, so the result keeps every token (in input order), its
sequences distinct and its steps non-decreasing whenever every input's are.  Inputs must
share the model and the optional columns (origin GPU, gates): a column present in some inputs
only is refused rather than dropped.  An input without a ``step`` column is refused unless
``missing_steps="sequence"`` gives each of its sequences a step of its own (one forward pass
per sequence, as in ESFT's recording).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from traces.infra.errors import InputError

if TYPE_CHECKING:  # numpy and pyarrow are imported on use, so that `--help` stays light
    import numpy as np

    from traces.trace import RoutingTrace, TraceMeta

MISSING_STEPS = ("refuse", "sequence")


def _columns(path: Path) -> tuple[bool, bool, bool]:
    """(has origin, has step, has gates) of a trace file, from its first block."""
    from traces.io import iter_trace

    first = next(iter_trace(path), None)
    if first is None:
        raise InputError(f"{path}: the trace has no tokens")
    return first.origin_gpu is not None, first.step is not None, first.gates is not None


def _sequence_steps(seq_id: np.ndarray, state: dict[str, int]) -> np.ndarray:
    """A step per sequence in order of appearance (continuing across blocks)."""
    import numpy as np

    change = np.ones(len(seq_id), dtype=bool)
    change[0] = seq_id[0] != state["last_seq"]
    change[1:] = seq_id[1:] != seq_id[:-1]
    steps = state["next"] + np.cumsum(change) - 1
    state["last_seq"] = int(seq_id[-1])
    state["next"] = int(steps[-1]) + 1
    return steps


def _shifted(paths: Sequence[Path], meta: TraceMeta) -> Iterator[RoutingTrace]:
    import numpy as np

    from traces.io import iter_trace

    step_base = 0
    seq_base = 0
    for path in paths:
        max_step, max_seq = -1, -1
        seq_state = {"last_seq": -1, "next": 0}
        for b in iter_trace(path):
            if b.num_tokens == 0:
                continue
            if b.step is None:
                step = _sequence_steps(b.seq_id, seq_state)
            else:
                step = b.step.astype(np.int64)
                if step.min() < 0:
                    raise InputError(f"{path}: has unrecorded steps (-1); cannot place it in time")
            seq = b.seq_id + seq_base
            step = step + step_base
            max_step = max(max_step, int(step.max()))
            max_seq = max(max_seq, int(seq.max()))
            if max_step >= np.iinfo(np.int32).max:
                raise InputError(f"{path}: steps exceed the int32 range after concatenation")
            yield replace(b, meta=meta, seq_id=seq, step=step.astype(np.int32))
        step_base = max_step + 1
        seq_base = max_seq + 1


def concat_trace_files(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    missing_steps: str = "refuse",
    through: Callable[[Iterator[RoutingTrace]], Iterator[RoutingTrace]] | None = None,
) -> int:
    """Write the inputs one after another in time to ``out`` (atomically); token count.
    ``through`` sees the blocks on their way to the file (a progress bar)."""
    from traces.io import read_trace_meta, write_blocks
    from traces.trace import TraceMeta

    if missing_steps not in MISSING_STEPS:
        raise InputError(f"unknown missing-steps rule {missing_steps!r}; known: refuse, sequence")
    files = [Path(p) for p in paths]
    if len(files) < 2:
        raise InputError("trace concat: give at least two traces")
    out_path = Path(out)
    for f in files:
        if f.exists() and out_path.exists() and f.resolve() == out_path.resolve():
            raise InputError(f"{out_path}: is also an input; write the result to a new file")
    metas = [read_trace_meta(f)[0] for f in files]
    cols = [_columns(f) for f in files]
    for f, m, c in zip(files, metas, cols, strict=True):
        if m.model != metas[0].model:
            raise InputError(
                f"{f}: model {m.model.name!r} differs from {files[0]}'s {metas[0].model.name!r}"
            )
        for name, have, first in (("origin_gpu", c[0], cols[0][0]), ("gates", c[2], cols[0][2])):
            if have != first:
                raise InputError(
                    f"{f}: {'has' if have else 'lacks'} the {name} column but {files[0]}"
                    f" {'has' if first else 'does not'}; every input must agree"
                )
        if not c[1] and missing_steps == "refuse":
            raise InputError(
                f"{f}: records no steps; pass --missing-steps sequence to give each of its"
                " sequences a step of its own"
            )
    meta = TraceMeta(
        model=metas[0].model,
        source="concatenation of " + ", ".join(str(f) for f in files),
        produced_by=f"moe-netsim trace concat (missing steps: {missing_steps})",
        extra={
            "concat": [
                {"file": str(f), "source": m.source} for f, m in zip(files, metas, strict=True)
            ]
        },
    )
    blocks = _shifted(files, meta)
    return write_blocks(out_path, blocks if through is None else through(blocks))
