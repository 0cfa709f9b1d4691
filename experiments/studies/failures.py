"""The failure study: every strategy on the healthy fabric and on each single failure of a class.

For every strategy the healthy fabric is placed once; then for each failure two policies are
replayed with the analytic counter:

* ``keep``: the healthy layout stays (what serves the moment the element fails); after a
  server failure its lost experts are repaired (:mod:`placement.repair`, nearest free slots);
* ``re-place``: the strategy runs again on the failed fabric.  Where the failure poses the same
  problem as the healthy fabric or an earlier failure (the cluster arrays the strategy reads,
  ``placement.strategies.READS_NETWORK``, equal; links compared in a canonical order, so a
  failure that only relabels links, as symmetric failures do for the bottleneck ILP, matches)
  that layout is reused without a solve.

A ``+robust`` strategy is placed once on the mean distance and wire time over the failures that
keep every GPU (:func:`experiments.failure_scenarios.robust_arrays`: the expected cost over the
failure set, exact for the ILPs) and kept.  Per scenario and policy: network bytes with and
without de-duplication (:func:`simulator.traffic.remote_copies`, the one rule), bytes summed
over network links, the busiest link direction's bytes and the bandwidth bound (per layer and
phase, the time the busiest link needs; summed), beside the paper's metric (hops per token)
and the compute balance (per layer the busiest GPU's routes over the mean, averaged).  The
failures with the highest bound per strategy and policy are replayed in the DES for p50/p99
latency, with the healthy fabric.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from experiments.failure_scenarios import Scenario, remap_origins, robust_arrays, scenarios
from experiments.failures_config import FailureStudyConfig
from experiments.pipeline import build_problem, origin_activation
from experiments.studies.cell import Fit, strategy_redundant
from placement import (
    SAMPLE_STRATEGIES,
    STRATEGIES,
    ExpertLayout,
    SolverOptions,
    check_layout,
    default_slots,
    solve_placement,
)
from placement.repair import repair_layout
from placement.strategies import ROBUST_STRATEGIES, network_reads
from placement.token_sample import token_sample
from simulator.analytic import AnalyticResult, count_traffic
from simulator.cluster.arrays import placement_arrays
from simulator.cluster.topology import ClusterSpec
from simulator.config import SimConfig
from simulator.engine import simulate
from simulator.microbatches import microbatches
from traces.infra.errors import InputError
from traces.model import ModelSpec

ROBUST_SUFFIX = "+robust"
POLICIES = ("keep", "re-place")
Progress = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class FailureStudy:
    rows: pd.DataFrame  # one per (strategy, policy, scenario)
    skipped: pd.DataFrame  # failures that cut GPUs off: element, reason
    des: pd.DataFrame  # DES replays: strategy, policy, scenario, latency columns


def default_strategies(failure_class: str) -> list[str]:
    """Every strategy, and the robust variant of ilp-load where failures keep the GPUs."""
    extra = [] if failure_class == "server" else [f"ilp-load{ROBUST_SUFFIX}"]
    return [*STRATEGIES, *extra]


def check_strategies(strategies: list[str], failure_class: str) -> None:
    for p in strategies:
        base = p.removesuffix(ROBUST_SUFFIX)
        if base not in STRATEGIES:
            raise InputError(f"--strategy {p}: unknown strategy {base!r}; known:"
                             f" {', '.join(STRATEGIES)} (and NAME{ROBUST_SUFFIX})")
        if p.endswith(ROBUST_SUFFIX) and base not in ROBUST_STRATEGIES:
            raise InputError(f"--strategy {p}: the robust variant is for"
                             f" {', '.join(sorted(ROBUST_STRATEGIES))} (a cost linear in"
                             " distance and wire time, solved exactly)")
        if p.endswith(ROBUST_SUFFIX) and failure_class == "server":
            raise InputError(f"--strategy {p}: server failures remove GPUs, so their expected"
                             " cost is not one placement problem; use --class link or switch")


def _digest(layout: ExpertLayout) -> str:
    return hashlib.sha1(np.ascontiguousarray(layout.expert_gpus).tobytes()).hexdigest()


class _Study:
    """State shared by the scenarios: fitted tokens, problems and counts cached."""

    def __init__(self, cluster: ClusterSpec, model: ModelSpec, fit: Fit, options: SolverOptions,
                 sim: SimConfig, failure_class: str, progress: Progress) -> None:
        self.cluster, self.model, self.fit, self.options, self.sim = (
            cluster, model, fit, options, sim)
        self.progress = progress
        sim.traffic.check_cluster_byte_counts(model, fit.replay.num_tokens, cluster,
                                              "study failures")
        t0 = time.perf_counter()
        self.scenarios = scenarios(cluster, failure_class)
        progress(f"{len(self.scenarios) - 1} {failure_class} failures routed in"
                 f" {time.perf_counter() - t0:.1f} s")
        for sc in self.scenarios:  # a failure's detours may lengthen the longest route
            if sc.routes is not None:
                sim.traffic.check_byte_counts(model, fit.replay.num_tokens, sc.routes,
                                              f"study failures ({sc.label})")
        self._counts: dict[tuple[str, str], dict[str, Any]] = {}
        self._latency: dict[tuple[str, str], dict[str, float]] = {}
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._problems: dict[tuple[str, str], Any] = {}
        self._robust: dict[str, np.ndarray] | None = None
        self._placed: dict[tuple[str, str], tuple[ExpertLayout, str]] = {}

    def arrays(self, s: Scenario) -> dict[str, np.ndarray]:
        """The placement arrays of a scenario's routes (cached)."""
        if s.label not in self._arrays:
            assert s.routes is not None
            self._arrays[s.label] = placement_arrays(s.routes)
        return self._arrays[s.label]

    def problem(self, s: Scenario, strategy: str) -> Any:
        """The strategy's problem on a scenario: the healthy one with the scenario's arrays
        where every GPU survives, else built on the surviving GPUs and origins."""
        routes = s.routes
        assert routes is not None
        if s.keeps_gpus and (strategy, "healthy") in self._problems:
            return replace(self._problems[(strategy, "healthy")], **self.arrays(s))
        fit = self.fit
        tokens = None if fit.tokens is None else remap_origins(fit.tokens, s.index_map)
        per_origin = fit.per_origin
        if tokens is not None and not s.keeps_gpus:
            _, per_origin, _ = origin_activation([tokens], routes.num_gpus)
        if strategy in SAMPLE_STRATEGIES and tokens is None:
            raise InputError(f"strategy {strategy} is fitted on per-token routing; the study fits"
                             f" on load statistics ({fit.description})")
        problem = build_problem(
            routes, self.model, fit.activation, origin_activation=per_origin,
            num_redundant=strategy_redundant({"name": strategy}, self.model, routes.num_gpus),
            traffic=self.sim.traffic,
            sample=None if tokens is None else token_sample([tokens], routes.num_gpus))
        if s.element is None:
            self._problems[(strategy, "healthy")] = problem
        return problem

    def place(self, s: Scenario, strategy: str) -> tuple[ExpertLayout, str, float]:
        base = strategy.removesuffix(ROBUST_SUFFIX)
        problem = self.problem(s, base)
        if strategy.endswith(ROBUST_SUFFIX):
            if self._robust is None:
                self._robust = robust_arrays(self.scenarios)
            problem = replace(problem, **{k: self._robust[k] for k in
                                          ("distance", "pair_seconds_per_byte")})
        res = solve_placement(problem, base, self.options)
        if not res.is_ok or res.layout is None:
            raise InputError(f"study failures: {strategy} on {s.label}: {res.status.value}:"
                             f" {res.message}")
        problems = check_layout(problem, res.layout)
        if problems:
            raise RuntimeError(f"{strategy} produced an invalid layout: {problems}")
        return res.layout, res.status.value, res.runtime_s

    def signature(self, s: Scenario, strategy: str) -> str:
        """What ``strategy``'s layout on ``s`` depends on: the arrays it reads, the links in a
        canonical order (a failure that only relabels links poses the same problem)."""
        arrays = self.arrays(s)
        reads = network_reads(strategy.removesuffix(ROBUST_SUFFIX))
        h = hashlib.sha1()
        for name in ("distance", "pair_seconds_per_byte"):
            if name in reads:
                h.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
        if reads & {"server_link_incidence", "link_bandwidth_bytes_per_s"}:
            inc = arrays["server_link_incidence"]
            cols = np.column_stack([inc.reshape(-1, inc.shape[-1]).T.astype(np.float64),
                                    arrays["link_bandwidth_bytes_per_s"]])
            h.update(b"links" + np.ascontiguousarray(cols[np.lexsort(cols.T[::-1])]).tobytes())
        return h.hexdigest()

    def reuse(self, s: Scenario, strategy: str) -> tuple[ExpertLayout, str] | None:
        """A layout ``strategy`` already placed on a scenario posing the same problem as ``s``
        (the healthy one first), with that scenario's label; None where ``s`` changes the GPUs
        or poses a new problem."""
        if not s.keeps_gpus or s.routes is None:
            return None
        return self._placed.get((strategy, self.signature(s, strategy)))

    def remember(self, s: Scenario, strategy: str, layout: ExpertLayout) -> None:
        if s.keeps_gpus and s.routes is not None:
            self._placed.setdefault((strategy, self.signature(s, strategy)), (layout, s.label))

    def repair(self, s: Scenario, layout: ExpertLayout) -> tuple[ExpertLayout, dict[str, Any]]:
        assert s.routes is not None and self.scenarios[0].routes is not None
        copies = int((layout.expert_gpus >= 0).sum(axis=(1, 2)).max())
        slots, per_layer = default_slots(layout.expert_gpus.shape[0], copies, s.routes.num_gpus)
        r = repair_layout(layout, s.index_map, self.scenarios[0].routes.distance,
                          s.routes.distance, slots, per_layer)
        return r.layout, {"repaired_copies": r.lost_copies, "repair_moves": r.num_moves,
                          "repair_reloads": r.reloaded}

    def count(self, pairs: list[tuple[Scenario, ExpertLayout]]) -> list[dict[str, Any]]:
        """Analytic metrics of each (scenario, layout), cached by layout (the counter keeps
        each scenario's multipath routes across layouts)."""
        out = []
        for s, layout in pairs:
            key = (s.label, _digest(layout))
            if key not in self._counts:
                assert s.routes is not None
                replay = remap_origins(self.fit.replay, s.index_map)
                cut = list(microbatches([replay], self.sim.microbatch_tokens))
                self._counts[key] = _metrics(count_traffic(cut, s.routes, layout.expert_gpus,
                                                           self.sim.traffic))
            out.append(self._counts[key])
        return out

    def latency(self, s: Scenario, layout: ExpertLayout) -> dict[str, float]:
        """DES latency of a layout on a scenario (cached by layout)."""
        key = (s.label, _digest(layout))
        if key not in self._latency:
            assert s.routes is not None
            replay = remap_origins(self.fit.replay, s.index_map)
            res = simulate(list(microbatches([replay], self.sim.microbatch_tokens)), s.routes,
                           layout.expert_gpus, self.sim)
            self._latency[key] = {"latency_p50_ms": 1e3 * res.summary["latency_p50_s"],
                                  "latency_p99_ms": 1e3 * res.summary["latency_p99_s"],
                                  "makespan_ms": 1e3 * res.summary["makespan_s"]}
        return self._latency[key]


def _metrics(res: AnalyticResult) -> dict[str, Any]:
    net = res.links["weight"].to_numpy() > 0
    return {
        "network_bytes_dedup": res.summary["network_bytes_dedup"],
        "network_bytes_no_dedup": res.summary["network_bytes_no_dedup"],
        "network_link_bytes": res.summary["network_link_bytes"],
        "busiest_link_bytes": float(res.link_bytes[net].max(initial=0)),
        "bound_ms": 1e3 * (res.summary["dispatch_lower_bound_s"]
                           + res.summary["combine_lower_bound_s"]),
        "hops_per_token": res.hops_per_token,
        "gpu_balance_max_over_mean": res.summary["gpu_balance_max_over_mean"],
    }


def run_failure_study(
    cluster: ClusterSpec, model: ModelSpec, fit: Fit, strategies: list[str],
    config: FailureStudyConfig, options: SolverOptions, sim: SimConfig,
    progress: Progress = lambda _m: None,
) -> FailureStudy:
    """Replay every strategy on the healthy fabric and each failure (module docstring)."""
    check_strategies(strategies, config.failure_class)
    st = _Study(cluster, model, fit, options, sim, config.failure_class, progress)
    rows: list[dict[str, Any]] = []
    layouts: dict[tuple[str, str, str], ExpertLayout] = {}
    for strategy in strategies:
        t0 = time.perf_counter()
        healthy_layout, status, solve_s = st.place(st.scenarios[0], strategy)
        st.remember(st.scenarios[0], strategy, healthy_layout)
        solves, reused = 1, 0
        policies = ("keep",) if strategy.endswith(ROBUST_SUFFIX) else POLICIES
        mine: list[tuple[Scenario, ExpertLayout, dict[str, Any]]] = []
        for s in st.scenarios:
            if s.routes is None:
                continue
            for policy in policies:
                if s.element is None and policy == "re-place":
                    continue  # the healthy fabric is placed once
                row: dict[str, Any] = {
                    "strategy": strategy, "policy": policy, "scenario": s.label,
                    "failed_kind": "" if s.element is None else s.element.kind,
                    "status": status, "solved": s.element is None,
                    "solve_time_s": solve_s if s.element is None else 0.0, "reused": False}
                layout = healthy_layout
                if s.element is not None and policy == "keep" and not s.keeps_gpus:
                    layout, repair = st.repair(s, healthy_layout)
                    row.update(repair)
                elif s.element is not None and policy == "re-place":
                    found = st.reuse(s, strategy)
                    if found is not None:
                        layout, row["reused_from"] = found
                        reused += 1
                        row["reused"] = True
                    else:
                        layout, row["status"], row["solve_time_s"] = st.place(s, strategy)
                        st.remember(s, strategy, layout)
                        row["solved"] = True
                        solves += 1
                layouts[(strategy, policy, s.label)] = layout
                mine.append((s, layout, row))
        for (_, _, row), metrics in zip(mine, st.count([(s, lay) for s, lay, _ in mine]),
                                        strict=True):
            rows.append({**row, **metrics})
        progress(f"  {strategy}: {solves} solves, {reused} layouts reused,"
                 f" {time.perf_counter() - t0:.1f} s")
    frame = pd.DataFrame(rows)
    skipped = pd.DataFrame([{"scenario": s.label, "reason": s.reason}
                            for s in st.scenarios if s.routes is None],
                           columns=["scenario", "reason"])
    des = _des_worst(st, frame, layouts, config.des_worst, progress)
    return FailureStudy(frame, skipped, des)


def _des_worst(st: _Study, frame: pd.DataFrame,
               layouts: dict[tuple[str, str, str], ExpertLayout], n: int,
               progress: Progress) -> pd.DataFrame:
    """DES replays of the healthy fabric and the ``n`` highest-bound failures per strategy and
    policy."""
    out: list[dict[str, Any]] = []
    if n == 0:
        return pd.DataFrame(columns=["strategy", "policy", "scenario", "latency_p50_ms",
                                     "latency_p99_ms", "makespan_ms"])
    by_label = {s.label: s for s in st.scenarios}
    t0 = time.perf_counter()
    for (strategy, policy), group in frame.groupby(["strategy", "policy"], sort=False):
        failed = group[group["scenario"] != "healthy"]
        worst = failed.sort_values("bound_ms", ascending=False, kind="stable").head(n)
        for label in ["healthy", *worst["scenario"]]:
            if policy == "re-place" and label == "healthy":
                continue  # the same layout and fabric as keep's healthy row
            layout = layouts[(str(strategy), str(policy), label)]
            out.append({"strategy": strategy, "policy": policy, "scenario": label,
                        **st.latency(by_label[label], layout)})
    progress(f"DES: {len(out)} replays in {time.perf_counter() - t0:.1f} s")
    return pd.DataFrame(out)
