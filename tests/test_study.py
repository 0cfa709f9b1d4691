"""`moe-netsim study paper`: the grid as data, missing names flagged, a quick run end to end."""

from __future__ import annotations

import pandas as pd
import pytest

from experiments.cli import main
from experiments.studies.findings import ceiling_violations
from experiments.studies.paper import (
    _VARIANTS,
    EVEN,
    PAPER_MODELS,
    PAPER_STRATEGIES,
    PROJECT_STRATEGIES,
    QUICK_STRATEGIES,
    TENANTS,
    paper_study,
)
from placement import STRATEGIES
from simulator.cluster.families import BUILDERS
from traces import SynthConfig, generate_trace, model_preset, write_trace
from traces.infra.errors import InputError

FAMILIES = ("fat-tree", "fat-tree-sparse", "dragonfly", "dragonfly-sparse")


def test_paper_grid_runs_what_exists_and_names_what_does_not():
    study = paper_study()  # the full grid (no ESFT rows: no folder given)
    strategies = [p for p in PAPER_STRATEGIES + PROJECT_STRATEGIES
               if _VARIANTS.get(p, (p, {}))[0] in STRATEGIES]
    runnable = [f for f in FAMILIES if f in BUILDERS]
    # two origin scenarios (even, tenant locality) per model and fabric
    assert len(study.cells) == len(PAPER_MODELS) * len(runnable) * 2 * len(strategies)
    assert {c.config["trace"]["label"] for c in study.cells} == {EVEN, TENANTS}
    assert {c.config["trace"]["tenants"] for c in study.cells} == {0, 3, 4}
    for p in PAPER_STRATEGIES + PROJECT_STRATEGIES:
        flagged = any(f"strategy {p!r} is not in placement.STRATEGIES" in s for s in study.skipped)
        assert flagged == (_VARIANTS.get(p, (p, {}))[0] not in STRATEGIES)
    for f in FAMILIES:
        if f not in BUILDERS:
            assert any(f"family {f!r} is not in simulator.cluster.families.BUILDERS" in s
                       for s in study.skipped)
    quick = paper_study(quick=True)
    assert {c.config["strategy"]["name"] for c in quick.cells} == set(QUICK_STRATEGIES)


def test_paper_origins_flag_replaces_the_scenarios_and_checks_the_cluster():
    study = paper_study(quick=True, origins="tenants:0-2/3-5")
    assert {c.config["trace"]["origins"] for c in study.cells} == {"tenants:0-2/3-5"}
    with pytest.raises(InputError, match="server 6 is outside the cluster's servers 0..5"):
        paper_study(quick=True, origins="tenants:0-6")


@pytest.mark.parametrize("models", [
    ["--model", "deepseek-moe-16b"],
    pytest.param([], marks=pytest.mark.slow),  # both models: R1's ILPs take a while
])
def test_quick_paper_study_end_to_end(tmp_path, capsys, models):
    out = tmp_path / "paper"
    # the paper's own rows and the origin-aware ILP (the slow variant runs the quick default)
    rows = [] if not models else [a for p in ("round-robin", "ilp", "ilp-load", "ilp-origin")
                                  for a in ("--strategy", p)]
    assert main(["study", "paper", "--quick", "--tokens", "48", "--serial", "--no-esft",
                 "--out", str(out), *models, *rows]) == 0
    res = pd.read_parquet(out / "results.parquet")
    assert set(res["model"]) == ({models[1]} if models else set(PAPER_MODELS))
    for col in ("hops_per_token", "network_link_bytes", "max_link_utilisation",
                "latency_p50_ms", "latency_p99_ms", "solve_time_s",
                "hops_per_token_reduction_pct", "hops_ceiling_pct"):
        assert res[col].notna().all(), col
    assert set(res["scenario"]) == {EVEN, TENANTS}
    # round-robin is each setup's baseline; the ILPs never do worse on the expected hops they
    # optimise; the simulated hops are the expected hops of the replayed tokens; no cell
    # saves more than its ceiling
    assert (res.loc[res["strategy"] == "round-robin", "hops_per_token_reduction_pct"] == 0).all()
    exp = res.pivot_table(index=["model", "scenario"], columns="strategy",
                          values="expected_hops_per_token")
    assert (exp["ilp-load"] <= exp["round-robin"] + 1e-9).all()
    assert ((res["judged_expected_hops_per_token"] - res["hops_per_token"]).abs() < 1e-6).all()
    assert ceiling_violations(res).empty
    assert (res["ceiling_kind"] == "exact").all()
    page = (out / "report.html").read_text()
    assert "Compared with the paper" in page and "No cell saves more than its ceiling" in page
    assert "Source of gain: origins" in page
    if len(STRATEGIES) < len(PAPER_STRATEGIES + PROJECT_STRATEGIES):
        assert "Not run in this build" in page
    assert "deepseek-moe-16b" in capsys.readouterr().out


def test_esft_rows_in_sample_held_out_cross_task_and_tenants(tmp_path, esft_dir):
    study = paper_study(quick=True, model_names=("deepseek-moe-16b",), esft_dir=esft_dir,
                        inputs_dir=tmp_path / "inputs",
                        strategy_names=("round-robin", "ilp-origin"))
    labels = {c.config["trace"]["label"] for c in study.cells}
    assert {"ESFT in-sample (intent)", "ESFT held-out (intent)",
            "ESFT cross-task (fit intent, replay law)", "ESFT tenant locality, held-out"} <= labels
    tenant = next(c for c in study.cells if c.config["trace"]["label"].startswith("ESFT tenant")
                  and c.config["strategy"]["name"] == "ilp-origin")
    assert tenant.config["trace"]["origins"] == "tenants:0-1/2-3/4-5"
    from experiments.studies import evaluate_cell

    row = evaluate_cell(tenant.config).row
    assert row["model"] == "deepseek-v2-lite" and row["origin_gpus"] == 24
    assert row["ceiling_hops_per_token"] <= row["hops_per_token"] + 1e-9


def test_replay_a_trace_file_fitted_on_another(tmp_path):
    model = model_preset("deepseek-moe-16b")
    fit = tmp_path / "fit.parquet"
    replay = tmp_path / "replay.parquet"
    write_trace(fit, generate_trace(SynthConfig(model, num_tokens=64, seed=1)))
    write_trace(replay, generate_trace(SynthConfig(model, num_tokens=64, seed=2)))
    study = paper_study(quick=True, trace=replay, fit_trace=fit, tokens=32)
    cfg = study.cells[0].config
    assert cfg["trace"]["source"] == str(replay.resolve())
    assert cfg["trace"]["fit_source"] == str(fit.resolve())
    assert {c.config["model"] == {} for c in study.cells} == {True}
    with pytest.raises(InputError, match="--tokens 100"):
        paper_study(quick=True, trace=replay, tokens=100)
    with pytest.raises(InputError, match="--model 'gpt'"):
        paper_study(quick=True, model_names=("gpt",))
    with pytest.raises(InputError, match="--trace"):
        paper_study(quick=True, trace=tmp_path / "missing.parquet")


def test_fit_on_real_sglang_statistics_replay_synthetic(sglang_dir):
    import numpy as np

    from experiments.studies import evaluate_cell
    from traces.load_stats import read_sglang_logical_count

    stats_file = sglang_dir / "prefill_in1024.json"
    study = paper_study(quick=True, fit_trace=stats_file, tokens=32)
    # the counts are DeepSeek-V3/R1 geometry: DeepSeekMoE-16B is flagged, not silently dropped
    assert any(s.startswith("model deepseek-moe-16b: load statistics do not fit it")
               for s in study.skipped)
    assert {c.config["model"]["preset"] for c in study.cells} == {"deepseek-r1"}
    rr = next(c for c in study.cells if c.config["strategy"]["name"] == "round-robin")
    result = evaluate_cell(rr.config)
    assert result.row["fit"] == "load statistics prefill_in1024.json"
    assert result.row["replay_tokens"] == 32
    want = read_sglang_logical_count(stats_file, model_preset("deepseek-r1")).activation()
    np.testing.assert_array_equal(result.expert_load["activation"].to_numpy(), want.ravel())


def test_the_quick_study_with_esft_rows_runs_in_its_own_directory(tmp_path, esft_dir):
    """The traces the study imports into --out/inputs are its own, not inputs it must not
    touch; a directory left with only them (a run stopped before its record) is resumed."""
    out = tmp_path / "paper"
    argv = ["study", "paper", "--quick", "--model", "deepseek-moe-16b", "--strategy", "round-robin",
            "--tokens", "16", "--esft", str(esft_dir), "--serial", "--no-report", "--out", str(out)]
    (out / "inputs").mkdir(parents=True)
    assert main(argv) == 0
    res = pd.read_parquet(out / "results.parquet")
    assert any(res["scenario"].str.startswith("ESFT held-out"))
    assert (out / "inputs" / "esft-intent.parquet").is_file()

