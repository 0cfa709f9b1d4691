"""The failure study: reuse only where a strategy reads nothing that changed, the batched
counter equals the plain one, robust arrays are the expected cost, and the command end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from experiments.cli import main
from experiments.failure_scenarios import robust_arrays, scenarios
from experiments.pipeline import build_problem
from placement import STRATEGIES, SolverOptions, expected_cost, solve_placement
from placement.strategies import NETWORK_ARRAYS, READS_NETWORK
from placement.token_sample import token_sample
from simulator.cluster.builders import build_fat_tree, build_leaf_spine, build_rail_optimized
from simulator.cluster.io import save_cluster
from simulator.cluster.paths import build_route_table
from traces import SynthConfig, generate_trace
from traces.model import ModelSpec

MODEL = ModelSpec("small", (0, 1, 2), 64, 0, 4, 64, num_expert_groups=1)


def _trace(num_gpus: int, tokens: int = 256, seed: int = 0):
    return generate_trace(SynthConfig(MODEL, num_tokens=tokens, num_gpus=num_gpus, seed=seed))


@pytest.mark.parametrize("strategy", sorted(READS_NETWORK))
def test_a_layout_ignores_the_network_arrays_its_strategy_does_not_read(strategy):
    # the claim the study's layout reuse rests on: perturb every network array the strategy
    # is said not to read; the layout must not change
    routes = build_route_table(build_fat_tree(4, 4, None))
    trace = _trace(routes.num_gpus)
    from experiments.pipeline import origin_activation

    p, a, _ = origin_activation([trace], routes.num_gpus)
    base = build_problem(routes, MODEL, p, a, sample=token_sample([trace], routes.num_gpus),
                         num_redundant=0)
    rng = np.random.default_rng(1)
    changed = {}
    for name in set(NETWORK_ARRAYS) - READS_NETWORK[strategy]:
        x = getattr(base, name)
        changed[name] = x * rng.uniform(0.5, 2.0, size=x.shape) if name != "distance" else \
            x + rng.integers(0, 3, size=x.shape) * (x > 0)
    opts = SolverOptions(time_limit_s=20)
    before = solve_placement(base, strategy, opts).layout
    after = solve_placement(replace(base, **changed), strategy, opts).layout
    np.testing.assert_array_equal(before.expert_gpus, after.expert_gpus)


def test_strategies_without_an_entry_are_taken_to_read_every_array():
    from placement.strategies import network_reads

    assert set(READS_NETWORK) < set(STRATEGIES)
    assert network_reads("ilp-bottleneck") == frozenset(NETWORK_ARRAYS)


def test_robust_arrays_are_the_expected_cost_over_the_failures():
    # hop cost is linear in the distance matrix: a layout's cost on the mean distance is the
    # mean of its costs on each failed fabric
    cluster = build_fat_tree(4, 6, None)
    scen = scenarios(cluster, "switch")
    mean = robust_arrays(scen)
    kept = [s for s in scen[1:] if s.routes is not None and s.keeps_gpus]
    assert kept
    trace = _trace(cluster.num_gpus)
    from experiments.pipeline import origin_activation

    p, a, _ = origin_activation([trace], cluster.num_gpus)
    layout = solve_placement(build_problem(scen[0].routes, MODEL, p, a), "round-robin").layout
    costs = [expected_cost(build_problem(s.routes, MODEL, p, a), layout) for s in kept]
    robust = replace(build_problem(scen[0].routes, MODEL, p, a), distance=mean["distance"])
    assert expected_cost(robust, layout) == pytest.approx(np.mean(costs))


def _study(tmp_path, *args):
    src = tmp_path / "c.json"
    save_cluster(build_leaf_spine(4, 2, 2), src)
    out = tmp_path / "run"
    code = main(["study", "failures", "--topology", str(src), "--tokens", "64", "--out", str(out),
                 "--strategy", "round-robin", "--strategy", "ilp-load", *args])
    return code, out


def test_study_over_link_failures_end_to_end(tmp_path, capsys):
    code, out = _study(tmp_path, "--strategy", "ilp-load+robust")
    assert code == 0
    rows = pd.read_parquet(out / "rows.parquet")
    skipped = pd.read_parquet(out / "skipped.parquet")
    # leaf-spine 4 servers, 2 leaves, 2 spines: 4 server links (each cuts its server off) and
    # 4 leaf-spine links (replayed); per strategy 1 healthy + 4 x (keep, re-place) rows, robust
    # keep only
    assert len(skipped) == 4 and skipped["reason"].str.contains("disconnects 8 GPU").all()
    assert len(rows) == 2 * (1 + 4 * 2) + (1 + 4)
    # a link failure moves no copy off or onto a server: the network bytes stay
    keep = rows[rows["policy"] == "keep"]
    for _, g in keep.groupby("strategy"):
        assert g["network_bytes_dedup"].nunique() == 1
        assert g["network_bytes_no_dedup"].nunique() == 1
        # and no distance (leaf-spine links have a twin): hops and the GPU loads stay too
        assert g["hops_per_token"].nunique() == 1
        assert g["gpu_balance_max_over_mean"].nunique() == 1
    assert (rows["gpu_balance_max_over_mean"] >= 1.0).all()
    replaced = rows[rows["policy"] == "re-place"]
    assert replaced["reused"].all()  # the failures change no distance
    summary = pd.read_parquet(out / "summary.parquet")
    assert {"robust", "worst_bound_ms", "mean_bound_ms", "worst_latency_p99_ms",
            "healthy_hops_per_token", "worst_hops_per_token",
            "worst_gpu_balance_max_over_mean"} <= set(summary)
    assert (out / "report.html").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"] == "moe-netsim study failures"
    assert "robust (keep" in capsys.readouterr().out
    # `report` rebuilds the page from the run's tables, the same page
    page = (out / "report.html").read_text()
    (out / "report.html").unlink()
    (out / "bound_by_failure.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == page and (out / "bound_by_failure.png").is_file()


def test_study_over_server_failures_repairs_the_kept_layout(tmp_path):
    code, out = _study(tmp_path, "--class", "server", "--des-worst", "0")
    assert code == 0
    rows = pd.read_parquet(out / "rows.parquet")
    kept = rows[(rows["policy"] == "keep") & (rows["scenario"] != "healthy")]
    # deepseek-moe-16b (the default): 27 layers x 64 experts / 4 servers = 432 copies each
    assert (kept["repaired_copies"] == 432).all()
    assert (kept["repair_reloads"] == 432).all() and (kept["repair_moves"] == 0).all()
    assert not rows["reused"].any()  # the GPUs changed: nothing is reused


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "eplb+robust"], "the robust variant is for"),
    (["--class", "server", "--strategy", "ilp+robust"], "server failures remove GPUs"),
    (["--strategy", "nope"], "unknown strategy 'nope'"),
])
def test_study_bad_strategies_are_one_line(tmp_path, capsys, args, message):
    code, out = _study(tmp_path, *args)
    assert code == 2 and message in capsys.readouterr().err and not out.exists()


def test_failures_that_pose_the_same_problem_share_one_layout():
    # rail-optimized, 2 groups of 2 servers, 2 spines: many link failures pose the bottleneck
    # ILP the same problem up to the order of the links (and differ from the healthy one); the
    # layout placed for one is then optimal for the other: the same busiest-link value
    from collections import defaultdict

    from experiments.failures_config import FailureStudyConfig
    from experiments.studies.cell import fit_and_replay
    from experiments.studies.failures import _Study
    from experiments.study_trace import TRACE_DEFAULTS
    from placement.bottleneck import max_link_busy
    from simulator.config import SimConfig

    cluster = build_rail_optimized(4, 2, 2)
    fit = fit_and_replay({"seed": 0, "trace": {**TRACE_DEFAULTS, "fit_tokens": 64,
                                                "replay_tokens": 64}}, MODEL, cluster.gpu_server)
    st = _Study(cluster, MODEL, fit, SolverOptions(time_limit_s=20), SimConfig(),
                FailureStudyConfig().failure_class, lambda _m: None)
    healthy = st.signature(st.scenarios[0], "ilp-bottleneck")
    groups = defaultdict(list)
    for s in st.scenarios[1:]:
        if s.routes is not None:
            groups[st.signature(s, "ilp-bottleneck")].append(s)
    a, b = next(g for sig, g in groups.items() if sig != healthy and len(g) > 1)[:2]
    assert not np.array_equal(st.arrays(a)["server_link_incidence"],
                              st.arrays(b)["server_link_incidence"])  # not trivially equal
    layout_a, _, _ = st.place(a, "ilp-bottleneck")
    layout_b, _, _ = st.place(b, "ilp-bottleneck")
    pb = st.problem(b, "ilp-bottleneck")
    assert max_link_busy(pb, layout_a) == pytest.approx(max_link_busy(pb, layout_b), rel=1e-9)


@pytest.mark.parametrize("quiet", [False, True])
def test_the_time_line_counts_the_des_replays_events_unless_quiet(tmp_path, monkeypatch,
                                                                   quiet):
    from experiments.studies import estimates

    calls = []

    def counting(trace, routes, microbatch_tokens, traffic):  # noqa: ANN001, ANN202
        calls.append(trace.num_tokens)
        return 1.0

    monkeypatch.setattr(estimates, "des_replay_hop_events", counting)
    code, _ = _study(tmp_path, *(["-q"] if quiet else []))
    # the DES replays the study's 64 replay tokens; with -q nobody reads the line
    assert code == 0 and calls == ([] if quiet else [64])
