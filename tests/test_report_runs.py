"""Reports of demo and simulate runs: `report` works on every run directory, tables are in
human units, and a real browser shows every figure with nothing wider than the window."""

from __future__ import annotations

import re

import pytest
from browser import page_metrics, screenshot

from experiments.cli import main
from experiments.report_tables import axis_label, cell, header, human_table
from tests.test_simulator_cli import _args, inputs  # noqa: F401 - the fixture

SIMULATE_FIGURES = ["link_bytes.png", "latency_cdf.png", "timeline.png", "utilisation_time.png",
                    "topology_load.png"]


def test_human_units_hand_computed():
    # 23,522,666,496 bytes = 23.52 GB; 0.00276 s = 2.76 ms; utilisation 0.27 = 27.0 %
    assert header("network_link_bytes") == "Bytes on network links (GB)"
    assert cell("network_link_bytes", 23_522_666_496) == "23.52"
    assert header("latency_p99_s") == "p99 MoE latency (ms)"
    assert cell("latency_p99_s", 0.00276) == "2.76"
    assert cell("latency_p99_ms", 2.76) == "2.76"
    assert header("max_link_utilisation") == "Busiest link utilisation (%)"
    assert cell("max_link_utilisation", 0.27) == "27.0"
    assert cell("hops_per_token_reduction_pct", 5.06) == "+5.1"
    assert cell("solve_time_s", 45.8571) == "45.86"  # solver time stays in seconds
    assert cell("gap", float("nan")) == "–"
    assert header("some_new_column") == "Some new column"
    # a varied axis in a setup label, in the same units: 5e10 B/s = 50 GB/s; 2e-6 s = 0.002 ms
    assert axis_label("nic_bandwidth_bytes_per_s", 5e10) == "nic bandwidth 50 GB/s"
    assert axis_label("network_latency_s", 2e-6) == "network latency 0.002 ms"
    assert axis_label("zipf_exponent", 0.8) == "zipf exponent 0.8"
    assert axis_label("family", "dragonfly") == "family dragonfly"
    assert header("nic_bandwidth_bytes_per_s") == "Nic bandwidth (GB/s)"
    assert cell("nic_bandwidth_bytes_per_s", 5e10) == "50.00"
    shown = human_table(__import__("pandas").DataFrame({"tokens": [4096], "strategy": ["ilp"]}))
    assert shown.to_dict("list") == {"Tokens": ["4,096"], "Strategy": ["ilp"]}


def test_byte_columns_take_the_unit_their_largest_value_reaches():
    import pandas as pd

    # a small run: largest 3,456,789 B = 3.46 MB (was 0.00 GB); the column shares one unit,
    # so 12,000 B = 0.01 MB; 900 B and 12 B stay in bytes; an empty or NaN column reads GB
    shown = human_table(pd.DataFrame({"network_link_bytes": [3_456_789, 12_000],
                                      "bytes_intra_server": [900, 12],
                                      "network_bytes": [float("nan"), float("nan")]}))
    assert shown.to_dict("list") == {"Bytes on network links (MB)": ["3.46", "0.01"],
                                     "Bytes inside servers (B)": ["900", "12"],
                                     "Bytes leaving servers (GB)": ["–", "–"]}
    assert header("network_link_bytes", [2_500.0]) == "Bytes on network links (KB)"
    assert cell("network_link_bytes", 2_500.0, [2_500.0]) == "2.50"
    assert header("network_link_bytes", [5e12]) == "Bytes on network links (GB)"  # no TB
    # a byte-valued axis in a setup label takes its own unit too: 2 MiB = 2.1 MB, not 0.00 GB
    assert axis_label("chunk_bytes", 2 * 1024 * 1024) == "chunk 2.1 MB"


@pytest.mark.parametrize("mode", ["des", "analytic"])
def test_simulate_writes_its_report(inputs, mode, capsys):  # noqa: F811
    out = inputs["tmp"] / f"run-{mode}"
    assert main(_args(inputs, out, mode)) == 0
    assert f"open {out}/report.html" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    want = SIMULATE_FIGURES if mode == "des" else ["link_bytes.png", "topology_load.png"]
    assert images == want
    # this tiny run carries kilobytes to megabytes: shown in them, not as 0.00 GB
    assert re.search(r"Bytes on network links \((KB|MB)\)", page), page
    assert "nan" not in page.lower().split("<h2>")[-1]
    # `report` rebuilds the same page from the run directory alone
    for name in images:
        (out / name).unlink()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == page
    assert all((out / name).stat().st_size > 1000 for name in images)


def test_simulate_no_report(inputs):  # noqa: F811
    out = inputs["tmp"] / "bare"
    assert main(_args(inputs, out, "analytic", "--no-report")) == 0
    assert not (out / "report.html").exists() and not list(out.glob("*.png"))


def test_simulate_page_in_a_browser(inputs, tmp_path):  # noqa: F811
    out = inputs["tmp"] / "run"
    assert main(_args(inputs, out, "des")) == 0
    m = page_metrics(out / "report.html")
    assert m["broken_images"] == [] and m["images"] == len(SIMULATE_FIGURES)
    assert m["page_width"] <= m["viewport"], "the page is wider than the window"
    assert m["images_past_edge"] == [] and m["tables_wider_than_box"] == 0
    assert screenshot(out / "report.html", tmp_path / "page.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from experiments.commands.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(fat_tree_k=4, num_servers=6, fit_tokens=64, replay_tokens=64,
                     step_tokens=64, strategies=("round-robin", "ilp-load"))
    run_demo(cfg, out, lambda msg: None)
    return out


def test_report_rebuilds_the_demo_page(demo_dir):
    page = (demo_dir / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert images == ["summary.png", "server_load.png", "link_bytes.png", "latency_cdf.png",
                      "expert_load.png"]
    assert "Hop reduction vs. baseline (%)" in page and "p99 MoE latency (ms)" in page
    (demo_dir / "report.html").unlink()
    assert main(["report", str(demo_dir)]) == 0
    assert (demo_dir / "report.html").read_text() == page


def test_demo_page_in_a_browser(demo_dir):
    m = page_metrics(demo_dir / "report.html")
    assert m["broken_images"] == [] and m["images"] == 5 and m["tables"] == 1
    assert m["page_width"] <= m["viewport"] and m["tables_wider_than_box"] == 0


def test_report_refuses_a_run_without_a_report(tmp_path):
    (tmp_path / "meta.json").write_text('{"command": "moe-netsim trace stats"}')
    assert main(["report", str(tmp_path)]) == 2


def test_the_demo_model_text_follows_the_recorded_replay_config():
    from experiments.demo_text import replay_model_text

    text = replay_model_text({"chunk_bytes": 4096, "traffic": {"multipath": "hash"}}, False)
    assert "4.0 KiB chunks" in text and "multipath hash: one hashed path" in text
    assert "1 byte per hidden element" in text and "2 bytes per hidden element" in text
    flow = replay_model_text({"mode": "flow"}, True)  # no chunks in flow mode
    assert "chunks" not in flow and "max-min fair" in flow and "de-duplicated" in flow
    assert "1.0 MiB chunks" in replay_model_text({}, True)  # older runs: today's default
