"""``place --strategy dedup`` from a trace, and its bad input: one line, exit 2, nothing written."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from experiments.cli import main
from experiments.pipeline import build_problem
from placement import SolverOptions, expected_cost, solve_placement
from simulator.cluster.builders import build_fat_tree
from simulator.cluster.paths import build_route_table
from traces import SynthConfig, generate_trace, model_preset
from traces.io import write_trace

MODEL = model_preset("deepseek-moe-16b")


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("dedup")
    tr = generate_trace(SynthConfig(MODEL, num_tokens=200, seq_len=20, step_tokens=200,
                                    num_gpus=16, seed=4))
    return write_trace(d / "fit.parquet", tr)


def test_place_dedup_from_a_trace(trace_file, tmp_path, capsys):
    out = tmp_path / "layout.csv"
    code = main(["place", "--fat-tree", "4", "2", "--stats", str(trace_file), "--strategy",
                 "dedup", "--replicas", "16", "--time-limit", "10", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    for word in ("dual bound", "paper's metric", "de-duplicated", "without"):
        assert word in text
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["solver"]["dual_bound"] <= meta["solver"]["solver_objective"] + 1e-9
    assert meta["remote_copies_per_token_layer"] <= meta["remote_routes_per_token_layer"]
    assert "ablation" in meta["info"]


def _bad(argv, capsys, *outs):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("moe-netsim: error:")
    for o in outs:
        assert not o.exists()
    return err


def test_load_statistics_are_refused(sglang_dir, tmp_path, capsys):
    out = tmp_path / "l.csv"
    stats = sorted(sglang_dir.glob("*.json"))[0]
    err = _bad(["place", "--fat-tree", "4", "4", "--stats", str(stats), "--model",
                "deepseek-r1", "--strategy", "dedup", "--out", str(out)], capsys, out)
    assert "per-token routing" in err and str(stats) in err


def test_trace_of_another_model_is_refused(trace_file, tmp_path, capsys):
    out = tmp_path / "l.csv"
    err = _bad(["place", "--fat-tree", "4", "2", "--stats", str(trace_file), "--model",
                "deepseek-r1", "--strategy", "dedup", "--out", str(out)], capsys, out)
    assert "deepseek-r1" in err


def test_origins_beyond_the_cluster_are_refused(tmp_path, capsys):
    tr = generate_trace(SynthConfig(MODEL, num_tokens=50, seq_len=5, step_tokens=50,
                                    num_gpus=16, seed=1))
    tr = dataclasses.replace(tr, origin_gpu=np.full(50, 20, dtype=np.int32))
    path = write_trace(tmp_path / "far.parquet", tr)
    out = tmp_path / "l.csv"
    err = _bad(["place", "--fat-tree", "4", "2", "--stats", str(path), "--strategy", "dedup",
                "--out", str(out)], capsys, out)
    assert str(path) in err and "20" in err


# (--replicas -2 is refused by the flag's range: tests/test_numeric_options.py)
@pytest.mark.parametrize("extra", [["--replicas", "8", "--per-layer-per-gpu", "4"]])
def test_replicas_that_do_not_fit_are_refused(trace_file, tmp_path, capsys, extra):
    out = tmp_path / "l.csv"
    err = _bad(["place", "--fat-tree", "4", "2", "--stats", str(trace_file), "--strategy",
                "dedup", *extra, "--out", str(out)], capsys, out)
    assert "--replicas" in err


def test_ilp_breaks_ties_independently_of_load():
    # The paper's ILP sees every expert as equally likely: two problems that differ only in
    # measured load must get the same layout.
    routes = build_route_table(build_fat_tree(4, 3))
    rng = np.random.default_rng(0)
    a, b = (rng.dirichlet(np.ones(64), size=27) * 6 for _ in range(2))
    la = solve_placement(build_problem(routes, MODEL, a), "ilp").layout
    lb = solve_placement(build_problem(routes, MODEL, b), "ilp").layout
    assert np.array_equal(la.expert_gpus, lb.expert_gpus)


def test_ilp_load_reports_the_solver_objective_and_the_evaluated_cost_apart():
    routes = build_route_table(build_fat_tree(4, 3))
    G = routes.num_gpus
    rng = np.random.default_rng(1)
    oa = rng.dirichlet(np.ones(64 * G), size=27).reshape(27, 64, G) * 6
    p = build_problem(routes, MODEL, oa.sum(axis=2), origin_activation=oa)
    res = solve_placement(p, "ilp-load", SolverOptions())
    # the solver's own objective: measured p x expected round trip from evenly spread origins
    c = p.origins @ p.round_trip("hops")
    ilp_load = float((p.activation * c[res.layout.primary]).sum())
    assert res.solver.objective == pytest.approx(ilp_load)
    # the evaluated cost under its own name: per origin GPU (the problem has it)
    assert res.objective == pytest.approx(expected_cost(p, res.layout))
    assert res.objective != pytest.approx(ilp_load)
