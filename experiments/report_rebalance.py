"""The report of `rebalance` run directories: one run, or several side by side (per policy).

Figures: network bytes per token over time (one line per run, rebalances marked), weight bytes
migrated (cumulative), the stall of every rebalance (DES-measured where the run used the DES,
beside the busiest link's lower bound) and, for ``--mode des`` runs, the p99 MoE latency per
window (with ``--migration async`` also without the migration beside it).  Table: the totals
of each run's ``summary.json``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from experiments.report import Section, render_report
from experiments.report_tables import byte_unit
from traces.infra.errors import InputError

COMMAND = "moe-netsim rebalance"
SUMMARY_COLUMNS = ("run", "policy", "strategy", "migration", "mode", "rebalances",
                   "network_bytes", "bytes_migrated", "stall_s", "hops_per_token",
                   "network_bytes_saved_vs_static", "break_even_step", "latency_p99_s_max")


def is_rebalance_run(run_dir: Path) -> bool:
    try:
        meta = json.loads((Path(run_dir) / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("command") == COMMAND


def _load(run_dir: Path) -> Run:
    if not is_rebalance_run(run_dir):
        raise InputError(f"{run_dir}: not a run directory of `moe-netsim rebalance` (its"
                         " meta.json says otherwise or is missing)")
    try:
        timeline = pd.read_parquet(run_dir / "timeline.parquet")
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{run_dir}: incomplete rebalance run ({exc})") from None
    cfg = summary.get("config", {})
    label = f"{run_dir.name}: {cfg.get('policy', '?')}"
    for key, text in (("move_budget_bytes", "budget"), ("move_weight", "price")):
        if cfg.get(key) is not None:
            label += f", {text} {cfg[key]:g}"
    return label, timeline, summary


def _marks(ax: Any, t: pd.DataFrame, color: str) -> None:
    for s in t["step_start"][t["decision"] == "rebalance"]:
        ax.axvline(s, color=color, lw=0.6, ls=":")


def _finish(ax: Any, ylabel: str, title: str, legend_size: int) -> None:
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)


def _figures(runs: list[Run]) -> list[tuple[str, Any, str]]:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    out = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for k, (label, t, _) in enumerate(runs):
        c = colors[k % len(colors)]
        ax.plot(t["step_start"], t["network_bytes"] / t["tokens"] / 1e3, marker=".", color=c,
                label=label)
        _marks(ax, t, c)
    _finish(ax, "network KB / token", "Network bytes per token over time (dotted: rebalances)", 8)
    out.append(("rebalance_bytes.png", fig,
                "Network bytes per token in each window, one line per run; dotted lines mark"
                " the rebalances of the run of the same colour."))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    suffix, size = byte_unit(max((float(t["bytes_migrated"].sum()) for _, t, _ in runs),
                                 default=0.0))
    for k, (label, t, _) in enumerate(runs):
        ax.step(t["step_start"], t["bytes_migrated"].cumsum() / size, where="post",
                color=colors[k % len(colors)], label=label)
    _finish(ax, f"weight {suffix} moved (cumulative)", "Migration bytes", 8)
    out.append(("rebalance_migration.png", fig,
                "Expert-weight bytes moved by the rebalances so far, per run."))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for k, (label, t, _) in enumerate(runs):
        c = colors[k % len(colors)]
        moved = t[t["decision"] == "rebalance"]
        measured = "stall_des_s" if "stall_des_s" in moved else "stall_s"
        ax.plot(moved["step_start"], moved[measured] * 1e3, "o", color=c,
                label=f"{label}: stall" + (" (DES)" if measured == "stall_des_s" else ""))
        if "stall_bound_s" in moved:
            ax.plot(moved["step_start"], moved["stall_bound_s"] * 1e3, "_", ms=14, color=c,
                    label=f"{label}: busiest-link bound")
        if "migration_s" in moved:
            ax.plot(moved["step_start"], moved["migration_s"] * 1e3, "^", color=c,
                    label=f"{label}: async migration time")
    _finish(ax, "ms", "Stall per rebalance", 7)
    out.append(("rebalance_stalls.png", fig,
                "Per rebalance: the stall (serving paused while the weights move; measured in"
                " the DES with --mode des, else the busiest link's time, a lower bound), the"
                " bound, and for --migration async the time the background moves took."))
    des = [(label, t) for label, t, _ in runs if "latency_p99_s" in t]
    if des:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for k, (label, t) in enumerate(des):
            c = colors[k % len(colors)]
            ax.plot(t["step_start"], t["latency_p99_s"] * 1e3, marker=".", color=c, label=label)
            if "latency_p99_s_without_migration" in t:
                ax.plot(t["step_start"], t["latency_p99_s_without_migration"] * 1e3, "x",
                        color=c, label=f"{label}: same window without the migration")
            _marks(ax, t, c)
        _finish(ax, "p99 MoE latency (ms)", "Tail latency per window", 7)
        out.append(("rebalance_latency.png", fig,
                    "p99 MoE latency per window (DES); with --migration async the rebalance"
                    " windows are also shown replayed without the moves beside them."))
    return out


Run = tuple[str, pd.DataFrame, dict[str, Any]]  # (label, timeline, summary with its config)


def write_rebalance_sweep_report(run_dir: Path) -> Path:
    """The report of a sweep whose cells rebalance (``experiments.studies.rebalance_cell``):
    one line per cell, labelled by the values of its axes."""
    from experiments.studies.rebalance_cell import KEYS

    record = json.loads((run_dir / "study.json").read_text())
    results = pd.read_parquet(run_dir / "results.parquet")
    timeline = pd.read_parquet(run_dir / "timeline.parquet")
    labels = {c["cell_id"]: ", ".join(f"{p.split('.')[-1]}={v}" for p, v in c["axis_values"])
              or c["cell_id"] for c in record.get("cells", [])}
    runs: list[Run] = []
    for row in results.to_dict("records"):
        t = timeline[timeline["cell"] == row["cell"]].reset_index(drop=True)
        if t.empty:  # a failed cell
            continue
        config = {k: row.get(k) for k in (*KEYS, "strategy")}
        runs.append((labels.get(row["cell"], row["cell"]), t, {**row, "config": config}))
    return _write(runs, run_dir, f"sweep {html.escape(str(record.get('name', '')))}:"
                  f" {len(runs)} rebalancing cells of {len(results)}.")


def write_rebalance_report(run_dirs: list[Path], out: Path) -> Path:
    """Figures and ``report.html`` in ``out`` for one or more rebalance run directories."""
    runs = [_load(Path(d)) for d in run_dirs]
    return _write(runs, out, f"{len(runs)} rebalancing run(s):"
                  f" {html.escape(', '.join(map(str, run_dirs)))}.")


def _write(runs: list[Run], out: Path, what: str) -> Path:
    from experiments.outputs import atomic_write_text, save_figure

    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, fig, caption in _figures(runs):
        save_figure(out / name, fig)
        plt.close(fig)
        figures.append((name, caption))
    rows = []
    for label, _, summary in runs:
        cfg = summary.get("config", {})
        rows.append({"run": label, **{k: cfg.get(k) for k in ("policy", "strategy",
                                                               "migration", "mode")},
                     **{k: summary.get(k) for k in SUMMARY_COLUMNS[5:]}})
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    intro = (what + "  Break-even: the first step at which the network bytes saved against keeping"
             " the first layout reach the weight bytes moved (empty: never in the trace).")
    page = render_report("moe-netsim: rebalancing over time", [
        Section("Runs", [intro], table=table),
        Section("Figures", figures=figures),
    ])
    atomic_write_text(out / "report.html", page)
    return out / "report.html"
