"""No command writes to, replaces or deletes its inputs; --overwrite replaces only its own kind.

A table of every command that writes (its arguments with inputs in a case directory, and its
output flags); each output flag is pointed at each input, at a symlink and a ``..`` path to it,
at a hard link to it and at the directory holding the inputs, with and without --overwrite.
Each such run must exit 2 with one line on stderr, leave every input byte-identical and leave
nothing behind.  Then each output is pointed at a user's file that is not of the command's
kind: --overwrite must refuse it too.  Commands run in-process (experiments.cli.main).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from badinput import TINY, prepare_cli_dir

from experiments.cli import build_parser, command_paths, main
from traces import model_preset


@dataclass(frozen=True)
class Command:
    name: str
    argv: tuple[str, ...]  # "{d}" is the case directory
    inputs: tuple[str, ...]  # file names in the case directory that the command reads
    outputs: tuple[str, ...]  # output flags
    out_names: tuple[str, ...]  # a valid output name per flag (for the not-own-kind test)


STUDY = """
[study]
name = "protect"
[topology]
family = "fat-tree"
params = { k = 4, num_servers = 2 }
links = { gpus_per_server = 2 }
[trace]
source = "trace.parquet"
fit_tokens = 3
replay_tokens = 3
"""

COMMANDS = [
    Command("trace import vllm",
            ("trace", "import", "--format", "vllm", "{d}/req.npy", "--model", "{d}/tiny.json"),
            ("req.npy", "tiny.json"), ("--out",), ("t.parquet",)),
    Command("trace import sglang",
            ("trace", "import", "--format", "sglang", "{d}/counts.json",
             "--model", "{d}/tiny.json"),
            ("counts.json", "tiny.json"), ("--out",), ("s.parquet",)),
    Command("trace stats", ("trace", "stats", "{d}/trace.parquet", "--layout", "{d}/layout.csv"),
            ("trace.parquet", "layout.csv"), ("--out",), ("stats",)),
    Command("trace synth",
            ("trace", "synth", "--model", "deepseek-moe-16b", "--tokens", "8",
             "--load-stats", "{d}/counts16b.json"),
            ("counts16b.json",), ("--out",), ("syn.parquet",)),
    Command("topology build", ("topology", "build", "fat-tree", "--param", "k=4"),
            (), ("--out",), ("c.json",)),
    Command("topology draw", ("topology", "draw", "{d}/cluster.json"),
            ("cluster.json",), ("--out",), ("c.png",)),
    Command("place",
            ("place", "--topology", "{d}/cluster.json", "--stats", "{d}/trace.parquet",
             "--strategy", "round-robin"),
            ("cluster.json", "trace.parquet"), ("--out", "--sglang-json", "--trtllm-yaml"),
            ("l.parquet", "l.json", "l.yaml")),
    Command("trace export", ("trace", "export", "{d}/trace.parquet", "--format", "vllm"),
            ("trace.parquet",), ("--out",), ("e.npz",)),
    Command("trace export folder",
            ("trace", "export", "{d}/trace.parquet", "--format", "trtllm"),
            ("trace.parquet",), ("--out",), ("trt",)),
    Command("simulate",
            ("simulate", "--trace", "{d}/trace.parquet", "--topology", "{d}/cluster.json",
             "--layout", "{d}/layout.csv", "--mode", "analytic"),
            ("trace.parquet", "cluster.json", "layout.csv"), ("--out",), ("run",)),
    Command("sweep", ("sweep", "{d}/study.toml", "--serial", "--no-report"),
            ("study.toml", "trace.parquet"), ("--out",), ("sweep",)),
    Command("study paper",
            ("study", "paper", "--quick", "--serial", "--trace", "{d}/trace.parquet"),
            ("trace.parquet",), ("--out",), ("paper",)),
    Command("study failures",
            ("study", "failures", "--topology", "{d}/cluster.json", "--trace",
             "{d}/trace.parquet", "--strategy", "round-robin", "--tokens", "3", "--no-report"),
            ("cluster.json", "trace.parquet"), ("--out",), ("failures",)),
    Command("topology import", ("topology", "import", "--matrix", "{d}/costs.json"),
            ("costs.json",), ("--out",), ("m.json",)),
    Command("demo", ("demo",), (), ("--out",), ("demo",)),
    Command("topology whatif", ("topology", "whatif", "{d}/cluster.json", "--fail", "server:s1"),
            ("cluster.json",), ("--out",), ("w.json",)),
    Command("trace concat", ("trace", "concat", "{d}/trace.parquet", "{d}/trace2.parquet"),
            ("trace.parquet", "trace2.parquet"), ("--out",), ("cat.parquet",)),
    Command("rebalance",
            ("rebalance", "--trace", "{d}/trace.parquet", "--topology", "{d}/cluster.json"),
            ("trace.parquet", "cluster.json"), ("--out",), ("rb",)),
    Command("trace record", ("trace", "record", "--config", "{d}/tiny.json", "--text",
                             "{d}/text.txt"), ("tiny.json", "text.txt"), ("--out",),
            ("rec.parquet",)),
]
# Commands that write only inside their input (report: report.html in the run directory).
WRITES_INSIDE_ITS_INPUT = {"report"}
# Commands whose inputs are directories (no hard links to test): their own test below.
DIRECTORY_INPUTS = {"report"}


def _prepare(d: Path) -> None:
    prepare_cli_dir(d)
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 9, (max(TINY.moe_layer_indices) + 1, TINY.num_routed_experts))
    counts[0] = 0  # layer 0 is dense
    (d / "counts.json").write_text(json.dumps({"logical_count": counts.tolist()}))
    m16 = model_preset("deepseek-moe-16b")
    counts = rng.integers(1, 9, (max(m16.moe_layer_indices) + 1, m16.num_routed_experts))
    counts[0] = 0
    (d / "counts16b.json").write_text(json.dumps({"logical_count": counts.tolist()}))
    (d / "study.toml").write_text(STUDY)
    shutil.copyfile(d / "trace.parquet", d / "trace2.parquet")
    (d / "text.txt").write_text("some text to record\n")
    (d / "costs.json").write_text('{"rank_cost_matrix": [[0, 1], [1, 0]]}')


def _snapshot(d: Path) -> dict[str, str]:
    """Every path under ``d`` with a digest of its bytes (directories and links by name)."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _argv(c: Command, d: Path, flag: str, target: str) -> list[str]:
    """The command's arguments with ``flag`` at ``target`` (and --out elsewhere, if needed)."""
    argv = [a.replace("{d}", str(d)) for a in c.argv] + [flag, target]
    if flag != "--out":
        argv += ["--out", str(d / "fresh" / c.out_names[0])]
    return argv


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


def _targets(d: Path, name: str) -> list[tuple[str, str]]:
    """Ways of naming the input ``name`` (or the folder holding it): (label, path)."""
    link, hard = d / "links" / f"sym-{name}", d / "links" / f"hard-{name}"
    return [
        ("same path", str(d / name)),
        ("relative with ..", str(d / "links" / ".." / name)),
        ("symlink", str(link)),
        ("hard link", str(hard)),
        ("folder holding it", str(d)),
    ]


CASES = [
    pytest.param(c, flag, name, label, overwrite, id=f"{c.name} {flag}={name} ({label})"
                 + (" --overwrite" if overwrite else ""))
    for c in COMMANDS for flag in c.outputs for name in c.inputs
    for label in ("same path", "relative with ..", "symlink", "hard link", "folder holding it")
    for overwrite in (False, True)
]


@pytest.mark.parametrize(("c", "flag", "name", "label", "overwrite"), CASES)
def test_no_command_writes_its_inputs(
    c: Command, flag: str, name: str, label: str, overwrite: bool, tmp_path: Path
) -> None:
    d = tmp_path / "case"
    d.mkdir()
    _prepare(d)
    (d / "links").mkdir()
    (d / "links" / f"sym-{name}").symlink_to(d / name)
    os.link(d / name, d / "links" / f"hard-{name}")
    target = dict(_targets(d, name))[label]
    before = _snapshot(tmp_path)
    argv = _argv(c, d, flag, target)
    code, err = _run(argv + (["--overwrite"] if overwrite else []))
    assert code == 2, (argv, err)
    assert "arguments are required" not in err and target in err, err
    assert err.startswith("moe-netsim: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before, f"{c.name}: inputs or listing changed ({err})"


@pytest.mark.parametrize(
    ("c", "flag", "out"),
    [pytest.param(c, flag, out, id=f"{c.name} {flag}")
     for c in COMMANDS for flag, out in zip(c.outputs, c.out_names, strict=True)],
)
def test_overwrite_replaces_only_its_own_kind(
    c: Command, flag: str, out: str, tmp_path: Path
) -> None:
    """A user's file (or folder) under the output name is kept, --overwrite or not."""
    d = tmp_path / "case"
    d.mkdir()
    _prepare(d)
    target = d / out
    if "." in out:
        target.write_text("the user's own notes\n")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("the user's own notes\n")
    before = _snapshot(tmp_path)
    argv = _argv(c, d, flag, str(target))
    for extra in ([], ["--overwrite"]):
        code, err = _run(argv + extra)
        assert code == 2, (argv + extra, err)
        assert err.count("\n") == 1 and str(target) in err, err
        assert _snapshot(tmp_path) == before


OWN_CASES = [
    ("topology build", ["topology", "build", "fat-tree", "--param", "k=4"], "c.json"),
    ("topology draw", ["topology", "draw", "{d}/cluster.json"], "c.png"),
    ("trace import", ["trace", "import", "--format", "vllm", "{d}/req.npy", "--model",
                      "{d}/tiny.json"], "t.parquet"),
    ("trace import sglang", ["trace", "import", "--format", "sglang", "{d}/counts.json",
                             "--model", "{d}/tiny.json"], "s.parquet"),
    ("trace synth", ["trace", "synth", "--model", "deepseek-moe-16b", "--tokens", "8",
                     "--load-stats", "{d}/counts16b.json"], "syn.parquet"),
    ("trace stats", ["trace", "stats", "{d}/trace.parquet"], "stats"),
    ("trace export", ["trace", "export", "{d}/trace.parquet", "--format", "vllm"], "e.npz"),
    ("place", ["place", "--topology", "{d}/cluster.json", "--stats", "{d}/trace.parquet",
               "--strategy", "round-robin", "--origins", "dp"], "l.parquet"),
    ("simulate", ["simulate", "--trace", "{d}/trace.parquet", "--topology", "{d}/cluster.json",
                  "--layout", "{d}/layout.csv", "--mode", "analytic", "--origins", "dp"], "run"),
]  # --origins dp: the tiny trace records every token on GPU 0 (a coverage warning otherwise)


@pytest.mark.parametrize(("name", "argv", "out"), OWN_CASES, ids=[c[0] for c in OWN_CASES])
def test_overwrite_replaces_what_the_command_wrote(
    name: str, argv: list[str], out: str, tmp_path: Path
) -> None:
    """Without --overwrite a second run is refused; with it, the command's own output is
    replaced; a different command's output of the same shape is not."""
    _prepare(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)) for a in argv] + ["--out", str(tmp_path / out)]
    assert _run(argv) == (0, "")
    code, err = _run(argv)
    assert code == 2 and "--overwrite" in err
    assert _run(argv + ["--overwrite"]) == (0, "")


def test_simulate_does_not_replace_a_trace_stats_directory(tmp_path: Path) -> None:
    _prepare(tmp_path)
    stats = ["trace", "stats", f"{tmp_path}/trace.parquet", "--out", f"{tmp_path}/run"]
    assert _run(stats) == (0, "")
    before = _snapshot(tmp_path)
    code, err = _run(["simulate", "--trace", f"{tmp_path}/trace.parquet", "--topology",
                      f"{tmp_path}/cluster.json", "--layout", f"{tmp_path}/layout.csv",
                      "--mode", "analytic", "--out", f"{tmp_path}/run", "--overwrite"])
    assert code == 2 and "moe-netsim simulate" in err
    assert _snapshot(tmp_path) == before


def _leaf(path: tuple[str, ...]):  # type: ignore[no-untyped-def]
    p = build_parser()
    for name in path:
        p = next(a for a in p._actions if hasattr(a, "choices") and isinstance(a.choices, dict)
                 and name in a.choices).choices[name]
    return p


def test_every_writing_command_declares_its_outputs_and_is_in_the_table() -> None:
    """The class, not the cases: a command with an --out, an --overwrite or any option whose
    name says it writes declares those outputs (add_output_argument), and every command that
    declares outputs is in COMMANDS (so its outputs meet its inputs above)."""
    tested = {c.name.split(" folder")[0] for c in COMMANDS}
    tested |= {c.name.rsplit(" ", 1)[0] for c in COMMANDS if c.name.startswith("trace import")}
    for path in command_paths():
        name = " ".join(path)
        leaf = _leaf(path)
        declared = {flag for flag, _ in (leaf.get_default("output_kinds") or {}).values()}
        flags = {s for a in leaf._actions for s in a.option_strings}
        writing = {f for f in flags if f == "--out" or f.endswith(("-json", "-yaml", "-png"))}
        assert writing <= declared, (name, writing - declared)
        if "--overwrite" in flags:
            assert declared, f"{name}: --overwrite but no declared output"
        if declared:
            assert name in tested | DIRECTORY_INPUTS, f"{name}: declares outputs, not tested"
        else:
            assert "--overwrite" not in flags and (
                name in WRITES_INSIDE_ITS_INPUT or not any(
                    "write" in (a.help or "").lower() for a in leaf._actions)), name


@pytest.mark.parametrize("where", ["same path", "folder holding it"])
def test_report_never_writes_its_run_directories(where: str, tmp_path: Path) -> None:
    """report's --out (the page comparing several runs) is refused at or above a run
    directory it reads, --overwrite or not, before the runs are read."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "timeline.parquet").write_text("a run's table\n")
    target = {"same path": run, "folder holding it": tmp_path}[where]
    before = _snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        code, err = _run(["report", str(run), str(run), "--out", str(target), *extra])
        assert code == 2 and err.count("\n") == 1 and str(target) in err, err
        assert _snapshot(tmp_path) == before
