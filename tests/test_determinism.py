"""Same inputs and seed give identical result frames: repeated runs, other processes with other
hash seeds (so no dependence on set or dict-of-str order), and input order that must not matter.

Wall-clock columns (``solve_time_s``, ``sim_runtime_s``) are the only ones excluded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.pipeline import build_problem, origin_activation
from placement import (
    SAMPLE_STRATEGIES,
    STRATEGIES,
    PlacementProblem,
    SolverOptions,
    solve_placement,
)
from placement.token_sample import token_sample
from simulator.cluster.builders import LinkDefaults, build_fat_tree
from simulator.cluster.paths import build_route_table
from simulator.cluster.topology import ClusterSpec
from simulator.config import SimConfig
from simulator.engine import simulate
from traces import ModelSpec, SynthConfig, generate_trace
from traces.synthetic import iter_synthetic

ROOT = Path(__file__).resolve().parents[1]
WALL_CLOCK = ["solve_time_s", "sim_runtime_s"]
MODEL = ModelSpec("det", (1, 2, 3), 16, 1, 2, 64, 4, 2, 32)  # grouped routing, like V3


def _cluster() -> ClusterSpec:
    return build_fat_tree(4, 5, LinkDefaults(gpus_per_server=2))  # 10 GPUs, 2 pods


def _trace(seed: int = 3, tokens: int = 300):  # noqa: ANN202
    return generate_trace(SynthConfig(MODEL, num_tokens=tokens, seq_len=16, step_tokens=100,
                                      num_gpus=10, zipf_exponent=0.6, seed=seed))


def _problem(routes, strategy: str = "ilp-load") -> PlacementProblem:  # noqa: ANN001
    """Every input any strategy uses (per-origin activation, wire times, link incidence);
    EPLB gets the 4 redundant slots that make 16 + 4 copies divide over the 10 GPUs; the
    strategies fitted on tokens get the trace's tokens."""
    p, per_origin, _ = origin_activation([_trace()], routes.num_gpus)
    sample = token_sample([_trace()], routes.num_gpus) if strategy in SAMPLE_STRATEGIES else None
    return build_problem(routes, MODEL, p, origin_activation=per_origin,
                         num_redundant=4 if strategy == "eplb" else 0,
                         slots_per_gpu=6, per_layer_per_gpu=2, sample=sample)


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    drop = [c for c in WALL_CLOCK if c in a.columns]
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))


def test_synthetic_trace_is_repeatable_and_independent_of_chunking():
    a, b = _trace(), _trace()
    for name in ("experts", "seq_id", "position", "origin_gpu", "step"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    cfg = SynthConfig(MODEL, num_tokens=5000, num_gpus=10, seed=7)
    chunks = [np.concatenate([blk.experts for blk in iter_synthetic(cfg, size)])
              for size in (1, 999, 4096, 10_000)]
    assert all(np.array_equal(chunks[0], c) for c in chunks[1:])
    assert not np.array_equal(_trace(seed=4).experts, a.experts)  # the seed matters


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_gives_the_same_layout_every_time(strategy):
    routes = build_route_table(_cluster())
    problem = _problem(routes, strategy)
    opts = SolverOptions(time_limit_s=60, seed=1)
    first = solve_placement(problem, strategy, opts)
    again = solve_placement(problem, strategy, opts)
    rebuilt = solve_placement(_problem(build_route_table(_cluster()), strategy), strategy, opts)
    assert first.is_ok, first.message
    for other in (again, rebuilt):
        assert other.status is first.status
        assert np.array_equal(other.layout.expert_gpus, first.layout.expert_gpus)
        assert other.objective == first.objective


def _simulate(cluster: ClusterSpec, strategy: str = "ilp-load"):  # noqa: ANN202
    routes = build_route_table(cluster)
    layout = solve_placement(_problem(routes), strategy, SolverOptions(seed=1)).layout
    blocks = list(_trace().iter_blocks(100))
    return simulate(blocks, routes, layout.expert_gpus, SimConfig(chunk_bytes=4096))


def test_simulation_frames_are_identical_on_repeat():
    a, b = _simulate(_cluster()), _simulate(_cluster())
    for name in ("links", "layers", "tokens"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.summary == b.summary


def test_simulation_does_not_depend_on_the_order_links_are_listed():
    """A cluster file may list links in any order: per-link results, per token and per layer
    frames are the same (links matched by their end points, since their ids follow the list)."""
    c = _cluster()
    order = np.random.default_rng(0).permutation(len(c.links))
    shuffled = replace(c, links=tuple(c.links[i] for i in order))
    a, b = _simulate(c), _simulate(shuffled)
    key = ["src", "dst"]
    la = a.links.drop(columns=["link_dir", "link"]).sort_values(key).reset_index(drop=True)
    lb = b.links.drop(columns=["link_dir", "link"]).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(la, lb)
    pd.testing.assert_frame_equal(a.layers, b.layers)
    pd.testing.assert_frame_equal(a.tokens, b.tokens)


_DEMO_SCRIPT = """
import sys
from pathlib import Path
from experiments.commands.demo import DemoConfig, run_demo
cfg = DemoConfig(fat_tree_k=4, num_servers=3, fit_tokens=64, replay_tokens=64, step_tokens=32,
                 seed=5)
run_demo(cfg, Path(sys.argv[1]), lambda msg: None)
"""


def _run_demo_processes(outs: list[Path], argv_of) -> None:  # noqa: ANN001
    procs = []
    for i, out in enumerate(outs):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": str(1 + 4242 * i),
               "MPLBACKEND": "Agg"}
        procs.append(subprocess.Popen(argv_of(out), env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err


def _assert_same_parquet(a: Path, b: Path) -> list[str]:
    names = sorted(p.name for p in a.glob("*.parquet"))
    assert names == sorted(p.name for p in b.glob("*.parquet"))
    for name in names:
        _frames_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    return names


def test_demo_pipeline_outputs_are_identical_across_processes_and_hash_seeds(tmp_path):
    """The demo's own code (synthetic trace, all strategies, replay, every Parquet output) on a
    small fabric, in two processes with different PYTHONHASHSEED."""
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:
        o.mkdir()
    _run_demo_processes(outs, lambda out: [sys.executable, "-c", _DEMO_SCRIPT, str(out)])
    names = _assert_same_parquet(*outs)
    assert {"summary.parquet", "layouts.parquet", "links.parquet", "tokens.parquet",
            "trace_replay.parquet"} <= set(names)
    summary = pd.read_parquet(outs[0] / "summary.parquet")
    assert list(summary["strategy"]) == ["round-robin", "ilp", "ilp-load", "ilp-origin",
                                         "eplb", "dedup"]


@pytest.mark.slow
def test_moe_netsim_demo_summary_is_identical_across_processes(tmp_path):
    """`moe-netsim demo` itself (full size fabric, small token count), twice, other hash seeds."""
    outs = [tmp_path / "a", tmp_path / "b"]
    _run_demo_processes(outs, lambda out: [sys.executable, "-m", "experiments", "demo", "--out",
                                           str(out), "--tokens", "64"])
    names = _assert_same_parquet(*outs)
    assert "summary.parquet" in names
