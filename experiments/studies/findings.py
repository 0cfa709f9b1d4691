"""What a study's numbers say, in words: savings beside ceilings and the source of each gain.

A saving is ``hops_per_token_reduction_pct`` (against the baseline strategy of the same setup);
its ceiling ``hops_ceiling_pct`` is the most any layout of that cell could save on the
replayed tokens (``placement.ceiling``).  Which source of gain a strategy can use is a property
of the strategy (what it is told) and of the scenario (what the tokens do); both are named here.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

PAPER_RANGE_PCT = (6.0, 30.0)  # the paper's hop reduction of ILPLoad vs. round-robin
CEILING_TOLERANCE_PCT = 1e-6

# What each strategy is told, hence which source of gain it can use.
GAIN_SOURCES = {
    "round-robin": "none (the baseline)",
    "greedy": "asymmetry (servers nearer the rest first) and load",
    "ilp": "asymmetry (the paper's c[s] with every expert equally used)",
    "ilp-load": "asymmetry x load (popular experts on the servers cheapest to reach)",
    "ilp-origin": "origins (experts near the tokens that use them), with asymmetry and load",
    "ilp-bytes": "asymmetry in wire time (bandwidth along routes), origins when recorded",
    "ilp-bottleneck": "link load balance (the busiest link, not the hop total)",
    "eplb": "compute load balance with redundant copies (hops are not its objective)",
    "ilp-load+replicas": "asymmetry x load with redundant copies near more origins",
    "dedup": "de-duplication (experts a token uses together on one server)",
}


def ceiling_violations(results: pd.DataFrame) -> pd.DataFrame:
    """Cells whose saving exceeds their ceiling (must be empty; a test checks it)."""
    if "hops_ceiling_pct" not in results:
        return results.iloc[0:0]
    s = results["hops_per_token_reduction_pct"]
    c = results["hops_ceiling_pct"]
    return results[c.notna() & (s > c + CEILING_TOLERANCE_PCT)]


def saving_table(summary: pd.DataFrame) -> pd.DataFrame | None:
    """Setup x strategy: "saving % (ceiling %)" strings."""
    if "hops_per_token_reduction_pct" not in summary:
        return None

    def cell(r: pd.Series) -> str:
        v = r["hops_per_token_reduction_pct"]
        c = r.get("hops_ceiling_pct", np.nan)
        if pd.isna(v):
            return ""
        return f"{v:+.1f} (ceiling {c:.1f})" if pd.notna(c) else f"{v:+.1f} (no ceiling)"

    df = summary.assign(text=summary.apply(cell, axis=1))
    return df.pivot_table(index="setup", columns="strategy", values="text", aggfunc="first",
                          sort=False).reset_index()


def _scenario(setup: str) -> str:
    return setup.rsplit(" / ", 1)[-1] if " / " in setup else setup


def findings(summary: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """Paragraphs (HTML-escaped) for the report: paper range, ceilings, sources of gain."""
    col = "hops_per_token_reduction_pct"
    if col not in summary or summary[col].isna().all():
        return ["No rows with a baseline: no savings to discuss."]
    lo, hi = PAPER_RANGE_PCT
    lines = [
        f"The paper reports {lo:.0f}-{hi:.0f}% fewer hops per token for its load-aware ILP than"
        " round-robin.  Below, every saving is out of sample unless its setup says in-sample,"
        " and stands beside its ceiling: the most any layout could save on the replayed tokens"
        " (exact for single-copy layouts; an LP bound for layouts with redundant copies)."
    ]
    bad = ceiling_violations(results)
    lines.append(
        "No cell saves more than its ceiling." if bad.empty else
        f"{len(bad)} cell(s) exceed their ceiling: a bug ({', '.join(map(str, bad['cell']))})."
    )
    for setup, rows in summary.groupby("setup", sort=False):
        ranked = rows.dropna(subset=[col]).sort_values(col, ascending=False)
        if ranked.empty:
            continue
        best = ranked.iloc[0]
        ceiling = best.get("hops_ceiling_pct", np.nan)
        load = rows[rows["strategy"] == "ilp-load"]
        origin = rows[rows["strategy"] == "ilp-origin"]
        scen = _scenario(str(setup))
        parts = [f"<b>{html.escape(str(setup))}</b>: best {html.escape(str(best['strategy']))}"
                 f" {best[col]:+.1f}%"]
        if pd.notna(ceiling):
            parts.append(f"of a ceiling of {ceiling:.1f}%")
        if not load.empty:
            v = load[col].iloc[0]
            where = "inside" if lo <= v <= hi else ("below" if v < lo else "above")
            parts.append(f"; ilp-load {v:+.1f}% ({where} the paper's range)")
        if not origin.empty:
            parts.append(f"; ilp-origin {origin[col].iloc[0]:+.1f}%")
        parts.append(". " + _explain(scen, ceiling))
        lines.append(" ".join(parts))
    lines.append("Sources of gain each strategy can use: " + "; ".join(
        f"{html.escape(p)}: {GAIN_SOURCES[p]}" for p in dict.fromkeys(summary["strategy"])
        if p in GAIN_SOURCES) + ".  Co-activation (experts used together) is used by none of"
        " these rows.")
    return lines


def _explain(scenario: str, ceiling: float) -> str:
    low = "; the ceiling itself is small" if pd.notna(ceiling) and ceiling < 6 else ""
    if "tenant" in scenario:
        return ("Source of gain: origins.  Each workload starts on its own servers, so"
                " experts placed near the workload that uses them save hops; only strategies told"
                " the origins (ilp-origin) can use it, ilp-load sees the same mean load as with"
                " even origins" + low + ".")
    if "cross-task" in scenario:
        return ("Source of gain: load, fitted on another task.  Expert popularity hardly"
                " carries over between tasks, so most of the in-task gain is lost" + low + ".")
    if "in-sample" in scenario:
        return ("In-sample: fitted on the very tokens replayed, an upper estimate of what the"
                " load can give" + low + ".")
    return ("Source of gain: asymmetry x load.  With origins spread evenly the ceiling is"
            " set by how much cheaper the best-placed servers are than the mean one; skewed"
            " load lets popular experts use them" + low + ".")
