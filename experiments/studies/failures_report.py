"""Summaries and the report of a failure study (``study failures``)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from experiments import plots
from experiments.outputs import atomic_write_text, save_figure
from experiments.report import Section, render_report
from experiments.studies.failures import FailureStudy, FailureStudyConfig
from traces.infra.errors import InputError

SUMMARY_COLUMNS = (
    "strategy", "policy", "robust", "healthy_bound_ms", "mean_bound_ms", "worst_bound_ms",
    "worst_increase_pct", "worst_scenario", "healthy_network_bytes_dedup",
    "worst_network_bytes_dedup", "healthy_network_bytes_no_dedup",
    "worst_network_bytes_no_dedup", "mean_network_link_bytes", "worst_network_link_bytes",
    "healthy_hops_per_token", "mean_hops_per_token", "worst_hops_per_token",
    "healthy_gpu_balance_max_over_mean", "worst_gpu_balance_max_over_mean",
    "healthy_latency_p99_ms", "worst_latency_p99_ms", "solves", "reused",
)


def summarize(study: FailureStudy, config: FailureStudyConfig) -> pd.DataFrame:
    """One row per strategy and policy: healthy, mean and worst over the failures."""
    out: list[dict[str, Any]] = []
    rows, des = study.rows, study.des
    healthy_of = rows[(rows["scenario"] == "healthy") & (rows["policy"] == "keep")
                      ].set_index("strategy")
    for (strategy, policy), g in rows.groupby(["strategy", "policy"], sort=False):
        h = healthy_of.loc[strategy]
        failed = g[g["scenario"] != "healthy"]
        row: dict[str, Any] = {"strategy": strategy, "policy": policy,
                               "healthy_bound_ms": h["bound_ms"]}
        if failed.empty:
            row["robust"] = True
        else:
            worst = failed.loc[failed["bound_ms"].idxmax()]
            increase = 100.0 * (worst["bound_ms"] / h["bound_ms"] - 1.0) if h["bound_ms"] else 0.0
            row.update(
                mean_bound_ms=failed["bound_ms"].mean(), worst_bound_ms=worst["bound_ms"],
                worst_increase_pct=increase, worst_scenario=worst["scenario"],
                robust=bool(increase <= 100.0 * config.robust_tolerance + 1e-9),
                worst_network_bytes_dedup=failed["network_bytes_dedup"].max(),
                worst_network_bytes_no_dedup=failed["network_bytes_no_dedup"].max(),
                mean_network_link_bytes=failed["network_link_bytes"].mean(),
                worst_network_link_bytes=failed["network_link_bytes"].max(),
                mean_hops_per_token=failed["hops_per_token"].mean(),
                worst_hops_per_token=failed["hops_per_token"].max(),
                worst_gpu_balance_max_over_mean=failed["gpu_balance_max_over_mean"].max(),
            )
        row.update(healthy_network_bytes_dedup=h["network_bytes_dedup"],
                   healthy_hops_per_token=h["hops_per_token"],
                   healthy_gpu_balance_max_over_mean=h["gpu_balance_max_over_mean"],
                   healthy_network_bytes_no_dedup=h["network_bytes_no_dedup"],
                   solves=int(g["solved"].sum()), reused=int(g["reused"].sum()))
        if not des.empty:
            mine = des[(des["strategy"] == strategy)]
            hp = mine[mine["scenario"] == "healthy"]["latency_p99_ms"]
            wp = mine[(mine["policy"] == policy) & (mine["scenario"] != "healthy")]
            row["healthy_latency_p99_ms"] = float(hp.iloc[0]) if len(hp) else float("nan")
            row["worst_latency_p99_ms"] = (float(wp["latency_p99_ms"].max()) if len(wp)
                                           else float("nan"))
        out.append(row)
    frame = pd.DataFrame(out)
    return frame[[c for c in SUMMARY_COLUMNS if c in frame.columns]]


def write_report(out: Path, study: FailureStudy, summary: pd.DataFrame,
                 config: FailureStudyConfig, cluster_label: str, fit_desc: str) -> None:
    """report.html and its figures in the run directory ``out``."""
    keep = summary[summary["policy"] == "keep"]
    bars = pd.concat([
        keep.assign(setup="healthy", value=keep["healthy_bound_ms"]),
        keep.assign(setup="mean failure", value=keep.get("mean_bound_ms")),
        keep.assign(setup="worst failure", value=keep.get("worst_bound_ms")),
    ])[["setup", "strategy", "value"]].dropna()
    fig = plots.plot_metric_by_setup(
        bars, "value", "bandwidth bound (ms)",
        "Busiest-link bound of the healthy layout, healthy and after single failures")
    try:
        save_figure(out / "bound_by_failure.png", fig)
    finally:
        plt.close(fig)
    robust = keep[keep["robust"]]["strategy"].tolist()
    n_fail = study.rows.loc[study.rows["scenario"] != "healthy", "scenario"].nunique()
    intro = [
        f"Cluster {html.escape(cluster_label)}; {n_fail} single {config.failure_class}"
        f" failures replayed, {len(study.skipped)} refused (they cut GPUs off); strategies fitted"
        f" on {html.escape(fit_desc)}.",
        "<b>keep</b>: the healthy layout stays (repaired after a server failure: lost experts"
        " to the nearest free slots); <b>re-place</b>: the strategy runs again on the failed"
        " fabric (its healthy layout reused where the failure changes nothing it reads).",
        "The bandwidth bound is the time the busiest link direction needs for each layer's"
        " dispatch and combine, summed: no schedule is faster. A layout is robust when its"
        f" worst failure's bound is at most {100 * config.robust_tolerance:g} % above its healthy"
        " one. Latency p99 comes from the DES on the healthy fabric and the worst failures.",
        "Beside the bytes: hops per token (the paper's metric: dispatch plus combine distance"
        " per token) and the GPU balance (per layer the busiest GPU's routes over the mean"
        " GPU's, averaged over layers; 1 = balanced).",
        "Robust layouts (keep): " + (html.escape(", ".join(robust)) or "none") + ".",
    ]
    worst = study.rows.sort_values("bound_ms", ascending=False).head(15)
    sections = [
        Section("Summary", intro, [("bound_by_failure.png", "bandwidth bound per strategy")],
                summary),
        Section("The 15 worst (strategy, policy, failure) rows", (), (), worst),
    ]
    if not study.des.empty:
        sections.append(Section("DES replays", (), (), study.des))
    if not study.skipped.empty:
        sections.append(Section("Failures not replayed", (), (), study.skipped))
    atomic_write_text(out / "report.html", render_report("Failure study", sections))


def rewrite_report(run_dir: Path) -> Path:
    """report.html and its figure again from a finished ``study failures`` run directory (its
    tables and meta.json); ``moe-netsim report`` calls this."""
    meta = json.loads((run_dir / "meta.json").read_text())
    study = FailureStudy(*(_table(run_dir, name) for name in ("rows", "skipped", "des")))
    write_report(run_dir, study, _table(run_dir, "summary"),
                 FailureStudyConfig(**meta["config"]), str(meta["cluster"]), str(meta["fit"]))
    return run_dir / "report.html"


def _table(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / f"{name}.parquet"
    if not path.is_file():
        raise InputError(f"{run_dir}: no {path.name} (not a finished `study failures` run)")
    return pd.read_parquet(path)
