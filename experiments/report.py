"""Self-contained HTML reports (figures are PNG files beside the page)."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from experiments.report_tables import (
    CHAR_PX,
    PAGE_TEXT_PX,
    TEXT_CELL_CHARS,
    axis_label,
    byte_unit,
)
from experiments.studies.findings import findings, saving_table

if TYPE_CHECKING:
    from experiments.progress import Feedback


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: Sequence[str] = ()
    figures: Sequence[tuple[str, str]] = ()  # (png file name, caption)
    table: pd.DataFrame | None = None


_CSS = """
body{font-family:system-ui,sans-serif;max-width:PAGE_PXpx;margin:2em auto;padding:0 1em;color:#222}
div.table{max-width:100%;overflow-x:auto;margin:1em 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td{white-space:nowrap} td.text{white-space:normal;max-width:TEXT_EMem;text-align:left}
th{background:#f3f3f3;vertical-align:bottom;min-width:4.5em}
td:first-child,th:first-child{text-align:left}
figure{margin:1.5em 0} img{max-width:100%} figcaption{font-size:13px;color:#555}
""".replace("PAGE_PX", str(PAGE_TEXT_PX)).replace(
    "TEXT_EM", f"{TEXT_CELL_CHARS * CHAR_PX / 13:.1f}")


def format_table(df: pd.DataFrame) -> str:
    """The table in human units and readable headers (experiments.report_tables)."""
    from experiments.report_tables import table_html

    return table_html(df)


def render_report(title: str, sections: Sequence[Section]) -> str:
    """HTML page: one block per section (text, table, figures)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{p}</p>" for p in s.paragraphs]
        if s.table is not None:
            parts.append(format_table(s.table))
        for png, caption in s.figures:
            parts.append(
                f"<figure><img src='{html.escape(png)}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


# --- the report of a study or sweep run directory ---------------------------------------------

TABLE_COLUMNS = (
    "setup", "strategy", "status", "hops_per_token", "hops_per_token_reduction_pct",
    "hops_ceiling_pct",
    "network_link_bytes", "network_link_bytes_reduction_pct", "max_link_utilisation",
    "latency_p50_ms", "latency_p99_ms", "latency_p99_ms_reduction_pct", "solve_time_s", "gap",
)
MAX_SETUP_FIGURES = 8


def _setup_labels(results: pd.DataFrame, axes: Sequence[str]) -> pd.Series:
    """One label per row naming every varied axis except the strategy's and the seed."""
    parts = []
    for path in axes:
        if path.startswith("strategy") or path == "seed":
            continue
        if path.startswith("model") and "model" in results:
            parts.append(results["model"].astype(str))
        elif path == "topology" and "cluster" in results:
            parts.append(results["cluster"].astype(str))
        elif path == "trace" and "scenario" in results:
            parts.append(results["scenario"].astype(str))
        else:
            leaf = path.split(".")[-1]
            parts.append(results[path].map(lambda v, leaf=leaf: axis_label(leaf, v)))
    if not parts:
        return pd.Series([str(results["cluster"].iloc[0])] * len(results), index=results.index)
    label = parts[0]
    for p in parts[1:]:
        label = label + " / " + p
    return label


def summarize_study(results: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """One row per (setup, strategy): metrics averaged over seeds (``seeds`` counts them)."""
    df = results.assign(setup=_setup_labels(results, axes))
    metrics = [c for c in TABLE_COLUMNS if c not in ("setup", "strategy", "status", "gap")
               and c in df.columns] + ["makespan_ms"]
    out = df.groupby(["setup", "strategy"], sort=False)[metrics].mean().reset_index()
    if "gap" in df.columns:  # the worst gap over the seeds: the weakest proof
        out["gap"] = df.groupby(["setup", "strategy"], sort=False)["gap"].max().to_numpy()
    status = df.groupby(["setup", "strategy"], sort=False)["status"].agg(
        lambda s: ",".join(sorted(set(s)))).reset_index(drop=True)
    out.insert(2, "status", status)
    out["seeds"] = df.groupby(["setup", "strategy"], sort=False).size().to_numpy()
    return out


def _topology_load_figure(
    run_dir: Path, per_setup: pd.DataFrame, setup: str, links: pd.DataFrame
) -> tuple[object, str] | None:
    """Per-link bytes on the drawn topology for the setup's strategy with the fewest hops."""
    import json

    from experiments.plot_topology import link_load_per_link, plot_topology
    from experiments.studies.sections import build_cluster

    rows = per_setup[per_setup["setup"] == setup]
    if rows.empty or "link" not in links.columns:
        return None
    best = rows.sort_values(["hops_per_token", "cell"]).iloc[0]
    config_path = run_dir / "cells" / str(best["cell"]) / "config.json"
    if not config_path.is_file():
        return None
    cluster = build_cluster(json.loads(config_path.read_text())["topology"])
    if cluster.num_gpus > 512:  # too dense to read
        return None
    lk = links[links["cell"] == best["cell"]]
    load = link_load_per_link(cluster, lk, "bytes")
    fig = plot_topology(cluster, load, "bytes", f"Link load: {setup}, {best['strategy']}")
    return fig, str(best["strategy"])


Save = Callable[[str, Any, str], None]  # (file name, figure, caption)


def _load_run(run_dir: Path) -> tuple[dict[str, Any], list[str], pd.DataFrame, pd.DataFrame]:
    """The run's record, varied axes, results (with setup labels) and per-setup summary."""
    import json

    from traces.infra.errors import InputError

    results_path = run_dir / "results.parquet"
    if not results_path.is_file() or not (run_dir / "study.json").is_file():
        raise InputError(
            f"{run_dir}: not a finished study or sweep run (results.parquet or study.json"
            " missing); run or resume the sweep first"
        )
    record = json.loads((run_dir / "study.json").read_text())
    axes = record.get("axes", [])
    results = pd.read_parquet(results_path)
    results = results.assign(setup=_setup_labels(results, axes))
    return record, axes, results, summarize_study(results, axes)


def _summary_figures(summary: pd.DataFrame, save: Save) -> None:
    from experiments import plots

    seeds_note = " (mean over seeds)" if summary["seeds"].max() > 1 else ""
    save("hops.png", plots.plot_metric_by_setup(
        summary, "hops_per_token", "hops per token (dispatch + combine, all MoE layers)",
        "The paper's metric: hops per token" + seeds_note),
        "Hops per token per strategy and setup (lower is better).")
    suffix, size = byte_unit(float(summary["network_link_bytes"].abs().max()))
    save("bytes.png", plots.plot_metric_by_setup(
        summary, "network_link_bytes", f"bytes on network links ({suffix}, both phases)",
        "Bytes carried by the network" + seeds_note, scale=size),
        "Bytes on network links (every hop counted) per strategy and setup.")
    save("utilisation.png", plots.plot_metric_by_setup(
        summary, "max_link_utilisation", "busiest link direction: busy time / makespan",
        "Maximum link utilisation" + seeds_note),
        "Utilisation of the most loaded link direction over the replay.")
    save("latency_p99.png", plots.plot_metric_by_setup(
        summary, "latency_p99_ms", "p99 MoE latency per token (ms)",
        "Tail latency (simulated)" + seeds_note),
        "p99 of the per-token MoE latency summed over layers.")


def _drawn_setups(results: pd.DataFrame) -> list[str]:
    """The setups that get figures of their own (of the first seed, at most
    ``MAX_SETUP_FIGURES``)."""
    per_setup = results[results["seed"] == results["seed"].min()]
    return list(dict.fromkeys(per_setup["setup"]))[:MAX_SETUP_FIGURES]


def _setup_figures(run_dir: Path, results: pd.DataFrame, save: Save,
                   done: Callable[[str], None]) -> None:
    """Per setup (the cells of the first seed, one per strategy): links, latency, timeline,
    utilisation over time and the load drawn on the topology; ``done(setup)`` after each."""
    from experiments import plots

    links = pd.read_parquet(run_dir / "links.parquet")
    util_path = run_dir / "utilisation.parquet"
    util = pd.read_parquet(util_path) if util_path.is_file() else None
    tokens = pd.read_parquet(run_dir / "tokens.parquet")
    layers = pd.read_parquet(run_dir / "layers.parquet")
    first_seed = results["seed"].min()
    per_setup = results[results["seed"] == first_seed]
    for i, setup in enumerate(_drawn_setups(results)):
        cells = per_setup[per_setup["setup"] == setup][["cell", "strategy"]].drop_duplicates(
            "strategy")
        lk = links[(links["weight"] > 0)].merge(cells, on="cell")
        if not lk.empty:
            save(f"link_load_{i}.png", plots.plot_link_load_heatmap(
                lk, f"Most loaded network links: {setup}"),
                f"{setup}: bytes per network link direction and strategy (the most loaded ones),"
                f" seed {first_seed}.")
        tk = tokens.merge(cells, on="cell")
        save(f"latency_cdf_{i}.png", plots.plot_latency_cdfs(
            tk, f"Per-token MoE latency: {setup}"),
            f"{setup}: CDF of the per-token MoE latency over all layers, seed {first_seed}.")
        ly = layers.merge(cells, on="cell")
        save(f"timeline_{i}.png", plots.plot_layer_timeline(
            ly, f"MoE layers over time: {setup}"),
            f"{setup}: when each MoE layer of each micro-batch ran (dispatch to combine).")
        if util is not None:
            ut = util.merge(cells, on="cell")
            if not ut.empty:
                save(f"utilisation_time_{i}.png", plots.plot_utilisation_over_time(
                    ut, f"Network link utilisation over time: {setup}"),
                    f"{setup}: utilisation of the busiest network link direction (solid) and"
                    f" the mean over network links (dashed) per time window, seed {first_seed}.")
        drawn = _topology_load_figure(run_dir, per_setup, setup, links)
        if drawn is not None:
            fig, strategy = drawn
            save(f"topology_load_{i}.png", fig,
                 f"{setup}: bytes per link drawn on the topology for {strategy} (the strategy with"
                 " the fewest hops per token); colour and width grow with load.")
        done(setup)


def _expert_load_figures(run_dir: Path, results: pd.DataFrame, save: Save) -> None:
    """One heatmap per model (the first cell's fit)."""
    from experiments import plots

    expert_load = pd.read_parquet(run_dir / "expert_load.parquet")
    for j, (model, group) in enumerate(results.groupby("model", sort=False)):
        ex = expert_load[expert_load["cell"].isin(group["cell"])]
        if ex.empty:  # every cell of the model failed
            continue
        cell = ex["cell"].iloc[0]
        group = group[group["cell"] == cell]
        ex = ex[ex["cell"] == cell]
        layer_ids = tuple(int(x) for x in dict.fromkeys(ex["layer"]))
        mat = ex["activation"].to_numpy(dtype=float).reshape(len(layer_ids), -1)
        fig = plots.plot_expert_load_heatmap(mat, layer_ids)
        fig.axes[0].set_title(f"Expert load per layer: {model} ({group['fit'].iloc[0]})")
        save(f"expert_load_{j}.png", fig,
             f"{model}: activation of each expert per MoE layer in the fit traffic, experts"
             " sorted by load within the layer.")


def _run_sections(
    record: dict[str, Any], axes: list[str], results: pd.DataFrame, summary: pd.DataFrame,
    figures: list[tuple[str, str]],
) -> list[Section]:
    table = summary[[c for c in (*TABLE_COLUMNS, "seeds") if c in summary.columns]]
    pivot = saving_table(summary)
    notes = [html.escape(n) for n in record.get("skipped", [])]
    intro = [
        html.escape(str(record.get("definition", {}).get("base", {}).get("study", {})
                        .get("description", ""))),
        f"{len(results)} cells; varied: {html.escape(', '.join(axes) or '(nothing)')}."
        f" Reductions are relative to the baseline strategy of the same setup and seed.",
        "Shared experts are replicated on every GPU and move no bytes.  Utilisation over time"
        " per link is not reported by this build of the simulator; the timeline figures show"
        " when every MoE layer ran instead.",
    ]
    sections = [
        Section("Study", [p for p in intro if p]),
        Section("Compared with the paper", findings(summary, results)),
        Section("Hop reduction vs. the baseline, beside its ceiling (%)", table=pivot),
        Section("Results per setup and strategy", table=table),
        Section("Figures", figures=figures),
    ]
    if notes:
        sections.insert(1, Section("Not run in this build", notes))
    if "failure" in results and results["failure"].notna().any():
        failed = results[results["failure"].notna()]
        sections.insert(1, Section(
            "Failed cells",
            [f"{len(failed)} of {len(results)} cells failed and have no numbers; the other"
             " cells ran.  A re-run of the same command retries them."],
            table=failed[["setup", "strategy", "failure"]].reset_index(drop=True)))
    return sections


def write_study_report(run_dir: Path, feedback: Feedback | None = None) -> Path:
    """Figures (PNG) and ``report.html`` for a finished study or sweep run directory; with
    ``feedback``, a bar counts its steps (the summary figures, each drawn setup, the expert
    loads, the page)."""
    import matplotlib.pyplot as plt

    from experiments.outputs import atomic_write_text, save_figure
    from experiments.progress import Feedback

    run_dir = Path(run_dir)
    record, axes, results, summary = _load_run(run_dir)
    figures: list[tuple[str, str]] = []

    def save(name: str, fig: Any, caption: str) -> None:
        save_figure(run_dir / name, fig)
        plt.close(fig)
        figures.append((name, caption))

    steps = 3 + len(_drawn_setups(results))
    with (feedback or Feedback()).bar(steps, "report: figures", "step") as bar:
        def done(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        _summary_figures(summary, save)
        done("summary")
        _setup_figures(run_dir, results, save, done)
        _expert_load_figures(run_dir, results, save)
        done("expert loads")
        page = render_report(f"moe-netsim: {record.get('name', 'study')}",
                             _run_sections(record, axes, results, summary, figures))
        atomic_write_text(run_dir / "report.html", page)
        done("report.html")
    return run_dir / "report.html"
