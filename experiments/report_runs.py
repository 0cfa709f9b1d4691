"""Reports of the single-run directories: `demo` and `simulate` (studies: experiments.report),
and :func:`write_run_report`, which picks the report for any run directory.

Each report is rebuilt from the run directory's own files (Parquet tables and meta.json), so
`moe-netsim report DIR` works on any finished run, and the commands call the same functions
when they finish.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from experiments import plots
from experiments.outputs import atomic_write_text, save_figure
from experiments.progress import Feedback
from experiments.report import Section, render_report, write_study_report
from traces.infra.errors import InputError

DEMO_TABLE = ("strategy", "status", "hops_per_token", "hops_per_token_reduction_pct",
              "network_link_bytes", "network_link_bytes_reduction_pct", "network_bytes",
              "max_link_utilisation", "latency_p50_ms", "latency_p99_ms",
              "latency_p99_ms_reduction_pct", "solve_time_s")
SIMULATE_TABLE = ("tokens", "microbatches", "hops_per_token", "network_link_bytes",
                  "network_bytes", "bytes_intra_server", "max_link_utilisation",
                  "max_gpu_compute_utilisation", "makespan_s", "latency_p50_s", "latency_p99_s",
                  "dispatch_lower_bound_s", "combine_lower_bound_s")
MAX_DRAWN_GPUS = 512  # beyond this a topology drawing is too dense to read


class _Figures:
    """Saves figures beside the page and remembers (file, caption) in order."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.items: list[tuple[str, str]] = []

    def add(self, name: str, fig: Any, caption: str) -> None:
        save_figure(self.run_dir / name, fig)
        plt.close(fig)
        self.items.append((name, caption))


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the run's meta.json ({exc})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: not a run's meta.json (expected a JSON object)")
    return meta


def _frame(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / name
    if not path.is_file():
        raise InputError(f"{path}: missing; the run directory is incomplete")
    return pd.read_parquet(path)


def write_run_report(run_dir: Path, feedback: Feedback | None = None) -> Path:
    """Figures (PNG) and ``report.html`` for any finished run directory: demo, simulate,
    study (paper or failures) or sweep (what kind it is, its own files say).  With
    ``feedback``: a bar counting the figures' steps of a study or sweep, a seconds bar for
    the others."""
    feedback = feedback or Feedback(bars=False)
    run_dir = Path(run_dir)
    if (run_dir / "study.json").is_file() and not (run_dir / "timeline.parquet").is_file():
        return write_study_report(run_dir, feedback)
    with feedback.ticking(None, "report: tables and figures"):
        return _write_other_report(run_dir)


def _write_other_report(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a directory; give a run directory of demo, simulate,"
                         " study or sweep")
    if (run_dir / "study.json").is_file():
        if (run_dir / "timeline.parquet").is_file():  # a sweep of rebalancing cells
            from experiments.report_rebalance import write_rebalance_sweep_report

            return write_rebalance_sweep_report(run_dir)
        return write_study_report(run_dir)
    if (run_dir / "meta.json").is_file():
        command = read_meta(run_dir).get("command")
        if command == "moe-netsim demo":
            return write_demo_report(run_dir)
        if command == "moe-netsim simulate":
            return write_simulate_report(run_dir)
        if command == "moe-netsim study failures":
            from experiments.studies.failures_report import rewrite_report

            return rewrite_report(run_dir)
        raise InputError(f"{run_dir}: a run of {command!r}, which has no report; reports are"
                         " written for demo, simulate, study failures, study and sweep runs")
    raise InputError(f"{run_dir}: not a finished run directory (no study.json or meta.json);"
                     " run or resume it first")


# --- demo ------------------------------------------------------------------------------------


def write_demo_report(run_dir: Path) -> Path:
    """Figures and report.html of a `moe-netsim demo` run directory."""
    from experiments.demo_text import demo_sections

    meta = read_meta(run_dir)
    summary = _frame(run_dir, "summary.parquet")
    links = _frame(run_dir, "links.parquet")
    tokens = _frame(run_dir, "tokens.parquet")
    server_load = _frame(run_dir, "server_load.parquet")
    figs = _Figures(run_dir)
    figs.add("summary.png", plots.plot_summary_bars(summary),
             "Hops per token and link bytes by tier, per placement.")
    figs.add("server_load.png", plots.plot_server_load(server_load),
             "Expected routed tokens per server vs. the server's cost.")
    figs.add("link_bytes.png", plots.plot_link_bytes(links),
             "Network link directions ranked by bytes.")
    figs.add("latency_cdf.png", plots.plot_latency_cdfs(
        tokens, "Per-token MoE latency (simulated)"),
        "Per-token MoE latency over all layers (SimPy replay).")
    if (run_dir / "expert_load.parquet").is_file():
        ex = _frame(run_dir, "expert_load.parquet")
        layer_ids = tuple(int(x) for x in dict.fromkeys(ex["layer"]))
        mat = ex["activation"].to_numpy(dtype=float).reshape(len(layer_ids), -1)
        figs.add("expert_load.png", plots.plot_expert_load_heatmap(mat, layer_ids),
                 "Expert activation per layer (fit trace).")
    table = summary[[c for c in DEMO_TABLE if c in summary.columns]]
    sections = demo_sections(meta, summary, server_load, table, figs.items)
    page = render_report("moe-netsim demo: round-robin vs. topology-aware ILP", sections)
    atomic_write_text(run_dir / "report.html", page)
    return run_dir / "report.html"


# --- simulate --------------------------------------------------------------------------------


def _input_path(run_dir: Path, recorded: object) -> Path | None:
    """A path meta.json recorded, as given or relative to the run directory's parent."""
    if not isinstance(recorded, str) or not recorded:
        return None
    for p in (Path(recorded), run_dir.parent / recorded):
        if p.is_file():
            return p
    return None


def _esc(meta: dict[str, Any], key: str) -> str:
    return html.escape(str(meta.get(key, "?")))


def write_simulate_report(run_dir: Path) -> Path:
    """Figures and report.html of a `moe-netsim simulate` run directory (des or analytic)."""
    meta = read_meta(run_dir)
    summary = _frame(run_dir, "summary.parquet")
    links = _frame(run_dir, "links.parquet")
    label = Path(str(meta.get("layout", "layout"))).stem or "layout"
    figs = _Figures(run_dir)
    notes: list[str] = []
    figs.add("link_bytes.png", plots.plot_link_bytes(links.assign(strategy=label)),
             "Network link directions ranked by bytes.")
    if meta.get("mode") == "des":
        tokens = _frame(run_dir, "tokens.parquet").assign(strategy=label)
        figs.add("latency_cdf.png", plots.plot_latency_cdfs(tokens, "Per-token MoE latency"),
                 "CDF of the per-token MoE latency summed over layers.")
        layers = _frame(run_dir, "layers.parquet").assign(strategy=label)
        figs.add("timeline.png", plots.plot_layer_timeline(layers, "MoE layers over time"),
                 "When each MoE layer of each micro-batch ran (dispatch to combine).")
        util = _frame(run_dir, "utilisation.parquet")
        net = links.loc[links["weight"] > 0, ["link_dir"]]
        util = util.merge(net, on="link_dir").assign(strategy=label)
        if not util.empty:
            figs.add("utilisation_time.png", plots.plot_utilisation_over_time(
                util, "Network link utilisation over time"),
                "Busiest network link direction (solid) and the mean over network links"
                " (dashed) per time window.")
    cluster_path = _input_path(run_dir, meta.get("topology"))
    if cluster_path is None:
        notes.append(f"The cluster file {html.escape(str(meta.get('topology')))} was not found"
                     " from here, so the per-link load is not drawn on the topology.")
    else:
        from experiments.plot_topology import link_load_per_link, plot_topology
        from simulator.cluster.io import load_cluster

        cluster = load_cluster(cluster_path)
        if cluster.num_gpus <= MAX_DRAWN_GPUS:
            load = link_load_per_link(cluster, links, "bytes")
            figs.add("topology_load.png", plot_topology(cluster, load, "bytes",
                                                        f"Link load: {label}"),
                     "Bytes per link drawn on the topology; colour and width grow with load.")
    row = summary.iloc[0]
    shown = pd.DataFrame([{c: row[c] for c in SIMULATE_TABLE if c in summary.columns}])
    intro = [
        f"Replay of <b>{_esc(meta, 'trace')}</b> ({_esc(meta, 'model')}) on"
        f" <b>{_esc(meta, 'cluster')}</b> with the layout <b>{_esc(meta, 'layout')}</b>;"
        f" mode {_esc(meta, 'mode')}, micro-batches: {_esc(meta, 'microbatches')}.",
        html.escape(str(row.get("shared_experts", ""))),
        *notes,
    ]
    sections = [
        Section("Run", [p for p in intro if p]),
        Section("Result", table=shown),
        Section("Figures", figures=figs.items),
    ]
    page = render_report(f"moe-netsim simulate: {label}", sections)
    atomic_write_text(run_dir / "report.html", page)
    return run_dir / "report.html"
