"""Every command that reads expert activation accepts the three load-statistics forms alike:
a native trace, SGLang's ``logical_count`` JSON and the Parquet of ``trace import --format
sglang``.  The JSON and the Parquet are made from the trace's own counts, so every command must
give the same answer for all three (a trace adds what counts cannot hold: pairs, origins)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from experiments.cli import main
from placement.layout_io import load_layout
from traces import SynthConfig, generate_trace, model_preset, read_trace
from traces.infra.errors import InputError
from traces.io import write_trace
from traces.load_stats import load_load_stats, load_stats_kind

MODEL = model_preset("deepseek-moe-16b")  # guessed from a JSON's geometry (28 x 64)
FORMS = ("trace", "sglang-json", "load-stats")


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("forms")
    trace = write_trace(d / "t.parquet", generate_trace(
        SynthConfig(MODEL, num_tokens=256, seq_len=8, num_gpus=32, zipf_exponent=0.8, seed=3)))
    counts = load_load_stats(trace).counts
    rows = np.zeros((MODEL.moe_layer_indices[-1] + 1, MODEL.num_routed_experts), dtype=np.int64)
    rows[list(MODEL.moe_layer_indices)] = counts  # dense layer 0 stays a zero row
    (d / "s.json").write_text(json.dumps({"logical_count": rows.tolist()}))
    assert main(["trace", "import", "--format", "sglang", str(d / "s.json"),
                 "--out", str(d / "s.parquet")]) == 0
    return {"trace": str(trace), "sglang-json": str(d / "s.json"),
            "load-stats": str(d / "s.parquet")}


def test_one_reader_reads_the_same_counts_from_each_form(forms):
    assert {k: load_stats_kind(v) for k, v in forms.items()} == {k: k for k in FORMS}
    want = load_load_stats(forms["trace"])
    for form in FORMS:
        got = load_load_stats(forms[form])
        assert got.model.num_routed_experts == MODEL.num_routed_experts
        np.testing.assert_array_equal(got.counts, want.counts)


def test_a_form_for_another_model_is_refused(forms):
    for form in FORMS:
        with pytest.raises(InputError, match=r"\.(json|parquet)"):
            load_load_stats(forms[form], model_preset("deepseek-r1"))


def test_place_accepts_each_form(forms, tmp_path):
    layouts = {}
    for form in FORMS:
        out = tmp_path / f"{form}.parquet"
        assert main(["place", "--fat-tree", "4", "4", "--stats", forms[form], "--strategy",
                     "greedy", "--out", str(out)]) == 0
        layouts[form] = load_layout(out, MODEL.num_moe_layers, 64, 32,
                                    MODEL.moe_layer_indices).expert_gpus
    # the same counts give the same layout (the trace adds token origins, so it may differ)
    np.testing.assert_array_equal(layouts["sglang-json"], layouts["load-stats"])


def test_place_ilp_origin_needs_a_trace(forms, tmp_path):
    assert main(["place", "--fat-tree", "4", "4", "--stats", forms["load-stats"], "--strategy",
                 "ilp-origin", "--out", str(tmp_path / "l.parquet")]) == 2


def test_trace_synth_fits_each_form(forms, tmp_path):
    experts = {}
    for form in FORMS:
        out = tmp_path / f"{form}.parquet"
        assert main(["trace", "synth", "--model", MODEL.name, "--tokens", "64", "--gpus", "32",
                     "--load-stats", forms[form], "--out", str(out)]) == 0
        experts[form] = read_trace(out).experts
    # the same counts and seed give the same trace, whichever form carried them
    for form in FORMS[1:]:
        np.testing.assert_array_equal(experts[form], experts["trace"])


@pytest.mark.parametrize("form", FORMS)
def test_trace_synth_tenant_stats_accepts_each_form(forms, form, tmp_path):
    out = tmp_path / "syn.parquet"
    assert main(["trace", "synth", "--model", MODEL.name, "--tokens", "32", "--gpus", "32",
                 "--tenant", f"share=1:gpus=0-31:stats={forms[form]}", "--out", str(out)]) == 0


@pytest.mark.parametrize("form", FORMS)
def test_trace_stats_accepts_each_form(forms, form, tmp_path):
    out = tmp_path / "st"
    assert main(["trace", "stats", forms[form], "--out", str(out)]) == 0
    act = pd.read_parquet(out / "activation.parquet")
    want = load_load_stats(forms["trace"]).counts.ravel()
    np.testing.assert_array_equal(act["routes"].to_numpy(dtype=float), want)
    assert (out / "expert_load.png").is_file()
    # pairs need tokens: only the trace has them
    assert (out / "coactivation.parquet").is_file() == (form == "trace")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["input"] == ("trace" if form == "trace" else "load statistics")


@pytest.mark.parametrize("form", ("sglang-json", "load-stats"))
def test_trace_stats_gpu_load_from_counts(forms, form, tmp_path):
    # GPU g's routes = sum of the counts of the experts it holds; the trace gives the same
    layout = tmp_path / "l.parquet"
    assert main(["place", "--fat-tree", "4", "4", "--stats", forms[form], "--strategy",
                 "round-robin", "--out", str(layout)]) == 0
    loads = {}
    for name in (form, "trace"):
        out = tmp_path / f"st-{name}"
        assert main(["trace", "stats", forms[name], "--layout", str(layout), "--no-pairs",
                     "--out", str(out)]) == 0
        loads[name] = pd.read_parquet(out / "gpu_load.parquet")["routes"].to_numpy(dtype=float)
    np.testing.assert_array_equal(loads[form], loads["trace"])


@pytest.mark.parametrize("form", FORMS)
def test_study_fits_on_each_form(forms, form):
    from experiments.studies import evaluate_cell
    from experiments.studies.paper import paper_study

    study = paper_study(quick=True, fit_trace=forms[form], tokens=16,
                        model_names=(MODEL.name,), strategy_names=("round-robin",))
    result = evaluate_cell(study.cells[0].config)
    if form != "trace":  # the counts' activation, exactly (a trace fits on its first tokens)
        want = load_load_stats(forms[form]).activation().ravel()
        np.testing.assert_allclose(result.expert_load["activation"].to_numpy(), want)
        assert result.row["fit"].startswith("load statistics")
