"""Drawing a cluster: tiers stacked bottom-up, servers grouped, optional per-link load.

``plot_topology(cluster, link_load)`` returns a matplotlib Figure; ``link_load_per_link`` turns a
``links.parquet`` frame (one row per link direction, as ``simulate`` and ``demo`` write it) into
one number per link.  Nothing here analyses or writes files.
"""

from __future__ import annotations

from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from experiments.report_tables import byte_unit
from simulator.cluster.topology import ClusterSpec
from traces.infra.errors import InputError

_TIER_COLOURS = {
    "nvlink": "#bbbbbb", "access": "#4c72b0", "rail": "#4c72b0", "aggregation": "#55a868",
    "local": "#55a868", "core": "#c44e52", "spine": "#c44e52", "global": "#8172b2",
}


def topology_levels(cluster: ClusterSpec) -> dict[str, int]:
    """Drawing level of each node: GPUs 0, servers 1, switches by tier.

    A switch's depth is 1 + its hop distance from the nearest server through switches; all
    switches of one tier share the smallest depth among them (edge/leaf/rail/router 2,
    aggregation 3, core 4...), so a sparse fabric keeps its tiers in rows.  Switches without a
    tier keep their own depth.
    """
    level = {n.name: 0 if n.kind == "gpu" else 1 for n in cluster.nodes if n.kind != "switch"}
    kinds = {n.name: n.kind for n in cluster.nodes}
    nbrs: dict[str, list[str]] = defaultdict(list)
    for lk in cluster.links:
        nbrs[lk.a].append(lk.b)
        nbrs[lk.b].append(lk.a)
    frontier = list(cluster.servers)
    depth = 1
    while frontier:
        depth += 1
        nxt = []
        for u in frontier:
            for v in nbrs[u]:
                if kinds[v] == "switch" and v not in level:
                    level[v] = depth
                    nxt.append(v)
        frontier = nxt
    for n in cluster.nodes:  # switches not reachable from a server
        level.setdefault(n.name, depth + 1)
    tier_level: dict[str, int] = {}
    for n in cluster.nodes:
        if n.kind == "switch" and n.tier:
            tier_level[n.tier] = min(tier_level.get(n.tier, level[n.name]), level[n.name])
    for n in cluster.nodes:
        if n.kind == "switch" and n.tier:
            level[n.name] = tier_level[n.tier]
    # close the gaps a tier move may leave
    rows = {v: i for i, v in enumerate(sorted(set(level.values())))}
    return {name: rows[v] for name, v in level.items()}


def topology_positions(cluster: ClusterSpec) -> dict[str, tuple[float, float]]:
    """(x, y) of every node: y = level; servers left to right in order with a gap between
    groups, GPUs spread under their server, switches in the order of the mean x of their
    neighbours one level below (so pods and groups line up)."""
    level = topology_levels(cluster)
    by_name = {n.name: n for n in cluster.nodes}
    pos: dict[str, tuple[float, float]] = {}
    x = 0.0
    prev_group: int | None = None
    for s in cluster.servers:
        grp = by_name[s].group
        if prev_group is not None and grp != prev_group:
            x += 0.6
        pos[s] = (x, 1.0)
        prev_group = grp
        x += 1.0
    width = max(x - 1.0, 1.0)
    gpus_of: dict[str, list[str]] = defaultdict(list)
    for g in cluster.gpus:
        gpus_of[by_name[g].server].append(g)
    for s, gpus in gpus_of.items():
        for i, g in enumerate(gpus):
            off = (i - (len(gpus) - 1) / 2) * (0.8 / max(len(gpus), 1))
            pos[g] = (pos[s][0] + off, 0.0)
    nbrs: dict[str, list[str]] = defaultdict(list)
    for lk in cluster.links:
        nbrs[lk.a].append(lk.b)
        nbrs[lk.b].append(lk.a)
    top = max(level.values())
    for lev in range(2, top + 1):
        names = [n.name for n in cluster.nodes if level[n.name] == lev]
        if not names:
            continue

        def barycentre(name: str, lev: int = lev) -> float:
            below = [pos[v][0] for v in nbrs[name] if v in pos and level[v] < lev]
            return float(np.mean(below)) if below else width / 2

        names.sort(key=lambda n: (barycentre(n), n))
        if len(names) == 1:
            xs = [width / 2]
        else:
            xs = list(np.linspace(0.0, width, len(names)))
        for name, xv in zip(names, xs, strict=True):
            pos[name] = (float(xv), float(lev))
    return pos


def link_load_per_link(
    cluster: ClusterSpec,
    links: pd.DataFrame,
    column: str = "bytes",
    strategy: str | None = None,
) -> np.ndarray:
    """One value per cluster link (its busier direction) from a per-direction links frame.

    ``links`` needs columns ``link``, ``src``, ``dst`` and ``column``; with a ``strategy`` column
    holding several strategies, pick one.  The link ends must match the cluster's, so a frame
    from another cluster is refused.
    """
    missing = {"link", "src", "dst", column} - set(links.columns)
    if missing:
        raise InputError(f"link-load table lacks column(s) {sorted(missing)}")
    if "strategy" in links.columns:
        names = list(dict.fromkeys(links["strategy"].astype(str)))
        if strategy is None and len(names) > 1:
            raise InputError(
                f"link-load table holds strategies {names}; choose one with --strategy"
            )
        if strategy is not None:
            if strategy not in names:
                raise InputError(f"link-load table has no strategy {strategy!r}; it has {names}")
            links = links[links["strategy"].astype(str) == strategy]
    elif strategy is not None:
        raise InputError("link-load table has no 'strategy' column; drop --strategy")
    out = np.zeros(len(cluster.links))
    for row in links[["link", "src", "dst", column]].itertuples(index=False):
        i = int(row.link)
        if not 0 <= i < len(cluster.links):
            raise InputError(f"link-load table: link {i} is not a link of {cluster.name!r}")
        lk = cluster.links[i]
        if {str(row.src), str(row.dst)} != {lk.a, lk.b}:
            raise InputError(
                f"link-load table: link {i} is {row.src}-{row.dst} but {lk.a}-{lk.b} in"
                f" {cluster.name!r}; was it made on another cluster?"
            )
        out[i] = max(out[i], float(getattr(row, column)))
    return out


def _segment(
    a: tuple[float, float], b: tuple[float, float], width: float
) -> list[tuple[float, float]]:
    """A straight line, or an arc above the row for a link between switches of one row
    (dragonfly local and global links), higher the farther apart its ends are."""
    if a[1] != b[1] or a[1] <= 1:
        return [a, b]
    t = np.linspace(0.0, 1.0, 24)
    h = 0.15 + 1.1 * abs(b[0] - a[0]) / max(width, 1.0)
    return list(zip(a[0] + (b[0] - a[0]) * t, a[1] + h * np.sin(np.pi * t), strict=True))


MAX_WIDTH_IN = 14.0  # widest drawing, inches (at the 120 dpi of save_figure: 1,680 px)
MAX_NAMED = 32  # name servers and switches only up to this many of each (else they overlap)


def plot_topology(
    cluster: ClusterSpec,
    link_load: np.ndarray | None = None,
    load_label: str = "bytes",
    title: str | None = None,
) -> Figure:
    """Draw the cluster bottom-up (GPUs, servers, then switch tiers), groups shaded.

    ``link_load`` (one value per link, e.g. from :func:`link_load_per_link`) colours links and
    sets their width; links with no load are drawn faint.  Without it links are coloured by tier.
    """
    pos = topology_positions(cluster)
    level = topology_levels(cluster)
    width = max(p[0] for p in pos.values()) + 1
    top = max(level.values())
    # at most 14 inches wide: a report shows the figure about 1100 px wide, and text must stay
    # legible there (a 128-server rail cluster would otherwise be 3,800 px wide, its text 2 px)
    fig_w = min(max(8.0, width * 0.35), MAX_WIDTH_IN)
    fig, ax = plt.subplots(figsize=(fig_w, 2.0 + 1.3 * top))
    label_pt = 9 if fig_w >= 10 else 8
    _draw_groups(ax, cluster, pos, label_pt)
    segs = [_segment(pos[lk.a], pos[lk.b], width) for lk in cluster.links]
    if link_load is None:
        _draw_tiers(ax, cluster, segs, label_pt)
    else:
        _draw_load(fig, ax, cluster, segs, link_load, load_label)
    _draw_nodes(ax, cluster, pos)
    ticks = sorted(set(level.values()))
    names = {0: "GPUs", 1: "servers"}
    by_name = {n.name: n for n in cluster.nodes}
    for lev in ticks:
        if lev not in names:
            tiers = sorted({by_name[n].tier for n, v in level.items() if v == lev} - {""})
            names[lev] = "/".join(tiers) or f"switch level {lev - 1}"
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=label_pt + 1)
    ax.set_xticks([])
    ax.set_xlim(-1.0, width)
    arcs = any(level[lk.a] == level[lk.b] and level[lk.a] > 1 for lk in cluster.links)
    ax.set_ylim(-0.9, top + (1.4 if arcs else 0.6))
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or f"{cluster.name}: {cluster.description}", fontsize=label_pt + 2)
    fig.tight_layout()
    return fig


_Segments = list[list[tuple[float, float]]]


def _draw_groups(ax: Axes, cluster: ClusterSpec, pos: dict[str, tuple[float, float]],
                 label_pt: int) -> None:
    """Groups (pods, dragonfly groups, leaves, rail groups): a box behind their servers and
    GPUs."""
    by_name = {n.name: n for n in cluster.nodes}
    members: dict[int, list[str]] = defaultdict(list)
    for s in cluster.servers:
        if by_name[s].group >= 0:
            members[by_name[s].group].append(s)
    for grp, servers in sorted(members.items()):
        xs = [pos[s][0] for s in servers]
        ax.add_patch(
            Rectangle((min(xs) - 0.5, -0.35), max(xs) - min(xs) + 1.0, 1.7,
                      color=f"C{grp % 10}", alpha=0.08, zorder=0)
        )
        ax.text((min(xs) + max(xs)) / 2, -0.5, f"group {grp}", ha="center", va="top",
                fontsize=label_pt)


def _draw_tiers(ax: Axes, cluster: ClusterSpec, segs: _Segments, label_pt: int) -> None:
    """Links coloured by tier, with a legend."""
    colours = [_TIER_COLOURS.get(lk.tier, "#888888") for lk in cluster.links]
    widths = [0.4 if lk.tier == "nvlink" else 0.8 for lk in cluster.links]
    ax.add_collection(LineCollection(segs, colors=colours, linewidths=widths, zorder=1))
    tiers = list(dict.fromkeys(lk.tier for lk in cluster.links))
    for t in tiers:
        ax.plot([], [], color=_TIER_COLOURS.get(t, "#888888"), label=t or "(no tier)")
    ax.legend(title="link tier", fontsize=label_pt, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))


def _draw_load(fig: Figure, ax: Axes, cluster: ClusterSpec, segs: _Segments,
               link_load: np.ndarray, load_label: str) -> None:
    """Links coloured and widened by load, idle ones faint, with a colour bar."""
    load = np.asarray(link_load, dtype=float)
    if load.shape != (len(cluster.links),):
        raise InputError(
            f"link load has {load.size} values, the cluster {len(cluster.links)} links"
        )
    if load_label == "bytes":  # GB (or MB, KB) on the colour bar, not "1e8" above raw bytes
        load_label, size = byte_unit(float(load.max()) if load.size else 0.0)
        load = load / size
    peak = float(load.max()) if load.size and load.max() > 0 else 1.0
    norm = Normalize(0.0, peak)
    cmap = plt.get_cmap("plasma_r")
    idle = load <= 0
    ax.add_collection(
        LineCollection([s for s, z in zip(segs, idle, strict=True) if z], colors="#dddddd",
                       linewidths=0.3, zorder=1)
    )
    busy = np.flatnonzero(~idle)
    ax.add_collection(
        LineCollection([segs[i] for i in busy], colors=cmap(norm(load[busy])),
                       linewidths=0.5 + 4.5 * load[busy] / peak, zorder=2)
    )
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.01, label=f"{load_label} (busier direction)")


def _draw_nodes(ax: Axes, cluster: ClusterSpec, pos: dict[str, tuple[float, float]]) -> None:
    """GPUs, servers and switches; servers and switches named while few enough."""
    kinds = defaultdict(list)
    for n in cluster.nodes:
        kinds[n.kind].append(n.name)
    gx = [pos[n][0] for n in kinds["gpu"]]
    ax.scatter(gx, [0.0] * len(gx), s=6, marker="o", color="#2ca02c", zorder=3, label="GPU")
    sx = [pos[n][0] for n in kinds["server"]]
    ax.scatter(sx, [1.0] * len(sx), s=40, marker="s", color="#1f77b4", zorder=3)
    for name in kinds["switch"]:
        x, y = pos[name]
        ax.scatter([x], [y], s=60, marker="D", color="#444444", zorder=3)
    if len(kinds["switch"]) <= MAX_NAMED:
        for name in kinds["switch"]:
            x, y = pos[name]
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 6), ha="center",
                        fontsize=7)
    if len(kinds["server"]) <= MAX_NAMED:
        for name in kinds["server"]:
            x, y = pos[name]
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(7, -3), fontsize=7)
