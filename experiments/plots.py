"""Plot functions: take frames, return figures.  No analysis, no files, no ``plt.show``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from experiments.report_tables import byte_unit  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

TIER_ORDER = ["nvlink", "access", "aggregation", "core", "global", "spine", "leaf", "rail"]


def zoom_to_differences(ax: Any, values: np.ndarray, baseline: float | None = None) -> None:
    """Bars whose differences are small next to their size: start the y axis near the smallest
    value (and say so on the axis) and label each bar with its value and its change against
    ``baseline`` (default: the first), so that a 2% difference is visible and read as 2%."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    spread = hi - lo
    if lo > 0 and spread < 0.3 * hi:
        pad = spread if spread > 0 else 0.01 * hi
        bottom = max(0.0, lo - 1.5 * pad)
        ax.set_ylim(bottom, hi + 1.0 * pad)
        ax.set_ylabel(f"{ax.get_ylabel()}\n(the axis starts at {bottom:,.4g}, not 0)")
    base = v[0] if baseline is None else baseline
    for xi, value in enumerate(v):
        if not np.isfinite(value):
            continue
        label = f"{value:,.4g}"
        if base and np.isfinite(base) and xi > 0:
            label += f"\n{100 * (value - base) / base:+.1f}%"
        ax.annotate(label, (xi, value), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")


def plot_summary_bars(summary: pd.DataFrame) -> Figure:
    """Hops per token and bytes per link tier, one bar group per strategy."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    strategies = summary["strategy"].tolist()
    x = np.arange(len(strategies))
    ax1.bar(x, summary["hops_per_token"], color="tab:blue")
    ax1.set_xticks(x, strategies)
    ax1.set_ylabel("hops per token (dispatch + combine, all layers)")
    zoom_to_differences(ax1, summary["hops_per_token"].to_numpy(dtype=float))
    ax1.set_title("The paper's metric: hops per token")
    tiers = [c[len("bytes_"):] for c in summary.columns if c.startswith("bytes_")]
    tiers.sort(key=lambda t: TIER_ORDER.index(t) if t in TIER_ORDER else 99)
    bottom = np.zeros(len(strategies))
    totals = summary[[f"bytes_{t}" for t in tiers]].to_numpy(dtype=float).sum(axis=1)
    suffix, size = byte_unit(float(np.nanmax(totals, initial=0.0)))
    for tier in tiers:
        vals = summary[f"bytes_{tier}"].to_numpy(dtype=float) / size
        ax2.bar(x, vals, bottom=bottom, label=tier)
        bottom += vals
    ax2.set_xticks(x, strategies)
    ax2.set_ylabel(f"bytes carried by links of the tier ({suffix}, both phases)")
    ax2.set_title("Link bytes by tier")
    ax2.legend(title="link tier", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def plot_link_bytes(links: pd.DataFrame) -> Figure:
    """Network link directions ranked by bytes, one line per strategy.

    ``links`` has columns strategy, weight, bytes (one row per link direction and strategy).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    network = links[links["weight"] > 0]
    suffix, size = byte_unit(float(network["bytes"].max()) if len(network) else 0.0)
    for strategy, df in network.groupby("strategy", sort=False):
        b = np.sort(df["bytes"].to_numpy(dtype=float))[::-1] / size
        ax.plot(np.arange(1, b.size + 1), b, label=str(strategy))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ranks are whole numbers
    ax.set_xlabel("network link direction, ranked by load")
    ax.set_ylabel(f"bytes ({suffix})")
    ax.set_title("Per-link bytes on the network")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_server_load(server_load: pd.DataFrame) -> Figure:
    """Expected routed tokens per server against its distance cost.

    ``server_load`` has columns strategy, server, cost, load.
    """
    fig, ax = plt.subplots(figsize=(9, 4.5))
    first = server_load[server_load["strategy"] == server_load["strategy"].iloc[0]]
    order = first.sort_values(["cost", "server"])["server"].to_numpy()
    pos = {s: i for i, s in enumerate(order)}
    strategies = list(dict.fromkeys(server_load["strategy"]))
    width = 0.8 / len(strategies)
    for j, (strategy, df) in enumerate(server_load.groupby("strategy", sort=False)):
        x = np.array([pos[s] for s in df["server"]]) + (j - (len(strategies) - 1) / 2) * width
        ax.bar(x, df["load"], width=width, label=str(strategy))
    ax2 = ax.twinx()
    ax2.plot(np.arange(len(order)), first.set_index("server").loc[order, "cost"], "k.--",
             label="server cost c[s]")
    ax2.set_ylabel("c[s]: expected round-trip distance from origins")
    step = max(1, len(order) // 32)  # about 32 labels at most, so they stay legible
    ax.set_xticks(np.arange(0, len(order), step), [str(s) for s in order[::step]], fontsize=7)
    ax.set_xlabel("server (sorted by distance cost, cheapest first)")
    ax.set_ylabel("expected routes per token landing on the server")
    ax.set_title("Where the expert load goes", pad=28)
    handles = ax.get_legend_handles_labels()
    extra = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="lower center",
              bbox_to_anchor=(0.5, 1.0), ncols=len(strategies) + 1, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_expert_load_heatmap(activation: np.ndarray, layer_indices: tuple[int, ...]) -> Figure:
    """Activation per layer and expert, experts of each row sorted by load (hottest left)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    mean = activation.mean(axis=1, keepdims=True)
    rel = np.sort(activation / np.where(mean > 0, mean, 1), axis=1)[:, ::-1]
    im = ax.imshow(rel, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("expert rank within layer (hottest first)")
    ax.set_ylabel("MoE layer")
    step = max(1, len(layer_indices) // 10)
    ax.set_yticks(np.arange(0, len(layer_indices), step), [str(x) for x in layer_indices[::step]])
    fig.colorbar(im, ax=ax, label="load / layer mean")
    ax.set_title("Expert load per layer")
    fig.tight_layout()
    return fig


# --- studies and sweeps (frames from a run directory; see experiments/report.py) -------------

_SLIDE: dict[RcKeyType, Any] = {"axes.titlesize": 14, "axes.labelsize": 12, "xtick.labelsize": 11,
                          "ytick.labelsize": 11, "legend.fontsize": 10}


def plot_metric_by_setup(
    results: pd.DataFrame, metric: str, ylabel: str, title: str, scale: float = 1.0
) -> Figure:
    """Grouped bars: one group per setup (column ``setup``), one bar per ``strategy``.

    ``results`` has columns setup, strategy and ``metric`` (one row per setup and strategy, already
    aggregated); values are divided by ``scale``.
    """
    with plt.rc_context(_SLIDE):
        setups = list(dict.fromkeys(results["setup"]))
        strategies = list(dict.fromkeys(results["strategy"]))
        fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(setups) + 4), 5.2))
        width = 0.8 / max(len(strategies), 1)
        crowded = len(strategies) * len(setups) > 12  # labels on the bars turn upright
        x = np.arange(len(setups))
        for j, strategy in enumerate(strategies):
            df = results[results["strategy"] == strategy].set_index("setup")
            vals = np.array([df[metric].get(s, np.nan) for s in setups], dtype=float) / scale
            bars = ax.bar(x + (j - (len(strategies) - 1) / 2) * width, vals, width=width,
                          label=str(strategy))
            if j > 0:  # the change against the first strategy of the setup, on the bar
                first = results[results["strategy"] == strategies[0]].set_index("setup")[metric]
                base = np.array([first.get(s, np.nan) for s in setups], dtype=float) / scale
                for bar, value, b in zip(bars, vals, base, strict=True):
                    if np.isfinite(value) and np.isfinite(b) and b:
                        ax.annotate(f"{100 * (value - b) / b:+.1f}%",
                                    (bar.get_x() + bar.get_width() / 2, value), ha="center",
                                    va="bottom", fontsize=9 if crowded else 10,
                                    rotation=90 if crowded else 0,
                                    xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(x, [s.replace(" / ", "\n") for s in setups])
        ax.set_ylabel(ylabel)
        top = np.nanmax(results[metric].to_numpy(dtype=float) / scale) if len(results) else 1
        ax.set_ylim(0, 1.15 * top if np.isfinite(top) and top > 0 else 1)
        legend_title = (f"strategy (% vs. {strategies[0]} on the bars)" if strategies
                        else "strategy")
        ax.legend(title=legend_title,
                  ncols=min(5, len(strategies)), loc="lower center", bbox_to_anchor=(0.5, 1.0),
                  frameon=False)
        ax.set_title(title, pad=48)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
    return fig


def plot_link_load_heatmap(links: pd.DataFrame, title: str, top: int = 30) -> Figure:
    """Per-link bytes on the network: rows are link directions, columns strategies.

    ``links`` has columns strategy, src, dst, tier, bytes (network links of one setup); the
    ``top`` most loaded directions (by their maximum over strategies) are shown, labelled
    ``src -> dst (tier)``.
    """
    with plt.rc_context(_SLIDE):
        net = links.assign(name=links["src"] + " \u2192 " + links["dst"] + " (" + links["tier"]
                           + ")")
        wide = net.pivot_table(index="name", columns="strategy", values="bytes", aggfunc="sum",
                               sort=False)
        wide = wide[list(dict.fromkeys(net["strategy"]))]
        wide = wide.loc[wide.max(axis=1).sort_values(ascending=False, kind="stable").index]
        wide = wide.iloc[:top] / 1e6
        fig, ax = plt.subplots(figsize=(max(7, 1.3 * wide.shape[1] + 5),
                                        max(4, 0.28 * len(wide) + 1.5)))
        im = ax.imshow(wide.to_numpy(), aspect="auto", cmap="magma_r", interpolation="nearest")
        ax.set_xticks(np.arange(wide.shape[1]), [str(c) for c in wide.columns], rotation=20)
        ax.set_yticks(np.arange(len(wide)), list(wide.index), fontsize=8)
        ax.set_xlabel("strategy")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label="bytes on the link direction (MB)")
        fig.tight_layout()
    return fig


def plot_latency_cdfs(tokens: pd.DataFrame, title: str) -> Figure:
    """CDF of per-token MoE latency, one curve per strategy (columns strategy, moe_latency_s)."""
    with plt.rc_context(_SLIDE):
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for strategy, df in tokens.groupby("strategy", sort=False):
            v = np.sort(df["moe_latency_s"].to_numpy(dtype=float)) * 1e3
            ax.plot(v, np.arange(1, v.size + 1) / v.size, label=str(strategy), lw=2)
        ax.set_xlabel("MoE latency per token, all layers (ms)")
        ax.set_ylabel("fraction of tokens")
        ax.set_title(title)
        ax.legend(title="strategy", loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(alpha=0.3)
        fig.tight_layout()
    return fig


def plot_layer_timeline(layers: pd.DataFrame, title: str) -> Figure:
    """When each MoE layer of each micro-batch ran, one row of bars per strategy.

    ``layers`` has columns strategy, microbatch, layer, start_s, finish_s.
    """
    with plt.rc_context(_SLIDE):
        strategies = list(dict.fromkeys(layers["strategy"]))
        fig, ax = plt.subplots(figsize=(10, max(3, 0.7 * len(strategies) + 1.5)))
        colours = plt.get_cmap("tab10")
        for i, strategy in enumerate(strategies):
            df = layers[layers["strategy"] == strategy]
            for mb, part in df.groupby("microbatch", sort=True):
                spans = list(zip(part["start_s"] * 1e3,
                                 (part["finish_s"] - part["start_s"]) * 1e3, strict=True))
                ax.broken_barh(spans, (i - 0.4 + 0.4 * (int(mb) % 2), 0.38),
                               facecolors=colours(int(mb) % 10), edgecolor="white", lw=0.3)
        ax.set_yticks(np.arange(len(strategies)), strategies)
        ax.set_xlabel("simulated time (ms); one block per MoE layer, colour = micro-batch")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
    return fig


def plot_utilisation_over_time(util: pd.DataFrame, title: str) -> Figure:
    """Busiest and mean network link utilisation per time window, one colour per strategy.

    ``util`` has columns strategy, start_s, end_s, utilisation (one row per link direction and
    window).
    """
    with plt.rc_context(_SLIDE):
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for i, (strategy, df) in enumerate(util.groupby("strategy", sort=False)):
            g = df.groupby("start_s")["utilisation"]
            t = np.asarray(g.max().index, dtype=float) * 1e3
            ax.plot(t, g.max().to_numpy(), color=f"C{i}", label=f"{strategy}: busiest link")
            ax.plot(t, g.mean().to_numpy(), color=f"C{i}", linestyle="--",
                    label=f"{strategy}: mean")
        ax.set_xlabel("simulated time (ms, window start)")
        ax.set_ylabel("network link utilisation in the window")
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.18),
                  frameon=False)
        ax.grid(alpha=0.3)
        fig.tight_layout()
    return fig
