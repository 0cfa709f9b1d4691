"""The run report: the expected figures and tables, readable labels, bad run directories."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from matplotlib.figure import Figure

from experiments import plots
from experiments.cli import main
from experiments.report import summarize_study
from experiments.report_runs import write_run_report
from experiments.studies import load_study_file, run_study
from tests.test_sweep import study_file
from traces.infra.errors import InputError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    run_study(load_study_file(study_file(d)), d / "run", serial=True)
    return d / "run"


def test_report_renders_expected_figures_and_tables(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (run_dir / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    # two setups (NIC bandwidths), one model: 4 overview bars, 5 figures per setup, 1 heatmap
    per_setup = ["link_load_{}.png", "latency_cdf_{}.png", "timeline_{}.png",
                 "utilisation_time_{}.png", "topology_load_{}.png"]
    assert images == [
        "hops.png", "bytes.png", "utilisation.png", "latency_p99.png",
        *[f.format(0) for f in per_setup], *[f.format(1) for f in per_setup],
        "expert_load_0.png",
    ]
    for name in images:
        assert (run_dir / name).stat().st_size > 1000, name
    # the saving table, and the results table cut in two (wider than the page)
    assert page.count("<table>") == 3
    for heading in ("Compared with the paper",
                    "Hop reduction vs. the baseline, beside its ceiling (%)",
                    "Results per setup and strategy"):
        assert heading in page
    # every setup x strategy appears in both parts of the results table, averaged over the
    # two seeds, and once in the saving table
    # (the axis in words and GB/s: it was nic_bandwidth_bytes_per_s=5e+10, too wide for its cell)
    assert page.count("<td class='text'>nic bandwidth 50 GB/s</td>") == 2 * 3 + 1


def test_summary_averages_seeds_per_setup_and_strategy(run_dir):
    results = pd.read_parquet(run_dir / "results.parquet")
    axes = ("strategy.name", "topology.links.nic_bandwidth_bytes_per_s", "seed")
    s = summarize_study(results, axes)
    assert len(s) == 6 and (s["seeds"] == 2).all()
    rr = results[(results["strategy"] == "round-robin")
                 & (results["topology.links.nic_bandwidth_bytes_per_s"] == 50e9)]
    got = s[(s["strategy"] == "round-robin")
            & (s["setup"] == "nic bandwidth 50 GB/s")]["hops_per_token"]
    assert got.iloc[0] == pytest.approx(rr["hops_per_token"].mean())


def test_plot_functions_take_frames_and_return_figures():
    df = pd.DataFrame({"setup": ["a", "a", "b", "b"], "strategy": ["rr", "ilp"] * 2,
                       "hops_per_token": [4.0, 3.0, 5.0, 4.5]})
    fig = plots.plot_metric_by_setup(df, "hops_per_token", "hops", "Hops")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "hops" and ax.get_legend() is not None
    # the figure keeps its own title; the legend's title says what the bars' labels are
    assert ax.get_title() == "Hops"
    assert ax.get_legend().get_title().get_text() == "strategy (% vs. rr on the bars)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    links = pd.DataFrame({"strategy": ["rr", "ilp"], "src": ["s0", "s0"], "dst": ["sw", "sw"],
                          "tier": ["access"] * 2, "bytes": [1e6, 2e6]})
    assert isinstance(plots.plot_link_load_heatmap(links, "t"), Figure)
    tokens = pd.DataFrame({"strategy": ["rr", "rr", "ilp"], "moe_latency_s": [1e-3, 2e-3, 1e-3]})
    assert isinstance(plots.plot_latency_cdfs(tokens, "t"), Figure)
    layers = pd.DataFrame({"strategy": ["rr"] * 2, "microbatch": [0, 1], "layer": [1, 1],
                           "start_s": [0.0, 0.0], "finish_s": [1e-3, 2e-3]})
    assert isinstance(plots.plot_layer_timeline(layers, "t"), Figure)


def test_report_of_something_that_is_not_a_run(tmp_path):
    with pytest.raises(InputError, match="not a finished run directory"):
        write_run_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_a_study_report_counts_its_steps_with_progress_and_is_silent_with_q(run_dir, capsys):
    """Two setups: the summary figures, one step per setup, the expert loads and the page:
    5 steps, each named (a 64-cell sweep's report takes 15 s CPU: a count, not seconds)."""
    assert main(["report", str(run_dir), "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "report: figures" in err and "5/5" in err and "nic bandwidth 50 GB/s" in err
    assert "report" not in out.replace(f"wrote {run_dir}/report.html", "")
    assert main(["report", str(run_dir), "-q"]) == 0
    assert capsys.readouterr().err == ""
