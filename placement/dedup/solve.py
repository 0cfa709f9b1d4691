"""``dedup`` and ``dedup-bytes``: placement for the expected network cost of de-duplicated
dispatch, fitted on the problem's token sample (see ``placement.dedup.evaluate`` for the rule).

The result's ``objective`` is, as for every strategy, the layout's expected hops (the paper's
metric); its ``solver`` outcome carries the de-duplicated cost on the fitting sample (round-trip
hops, or seconds on the wire, per remote server copy, per token over all layers), the lower
bound and the gap.

With every GPU's slots fixed per layer (the default: slots = layers x experts of a layer per
GPU), layers decouple and each is a hypergraph partitioning problem (tokens are hyperedges over
experts, the cost is the connectivity towards the token's origin).  Per layer:

1. servers get their copies per layer from the GPU quotas; primaries are split over servers in
   proportion (the rest are replica slots);
2. start from the routing groups packed by co-selection (``start``), from EPLB's layout and, for
   models without groups, from a co-activation fill; exact-delta swap local search
   (``search``) with random restarts; the best start wins;
3. replicas where they remove the most remote copies (``replicate``), then the swap search
   again on the experts with one copy;
4. copies to GPUs inside each server (``packing``: LPT, then exchanges that lower the busiest
   GPU; free for copies, which depend only on the server).

Compute-balance guard: per layer, the busiest GPU may serve at most ``1 + BALANCE_SLACK`` times
the routes EPLB's busiest GPU serves on the same problem (and ``balance_eps`` when given); the
search keeps server loads under that x GPUs, and a layer whose GPU split misses the cap is
solved again with a tighter server cap.  Every layer, searched, cut by the time limit or
missing the guard, ends as the cheapest within the guard of its searched layouts, EPLB's
layer, the group start and round-robin's and contiguous's layers (``layers``).  Without
replicas (and ``balance_eps``) the straggler trade (``trade``) decides after the search whether
the layers' saving is worth their busiest GPUs, else caps each layer's busiest GPU and busiest
server endpoint at EPLB's; each layer's copies keep EPLB's GPUs wherever they have EPLB's
servers (``anchor``).  With
``flatten_popularity`` > 0 every layer's token costs are weighted first (``popularity``: a
layout for a workload whose expert popularity differs from the sample's); the objective,
copies and bound reported stay the unweighted sample's.  Lower bound: ``bound``; the result
is ``optimal`` only when the bound meets the objective, else ``feasible`` with the gap.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from placement.baselines import contiguous_gpus, round_robin_gpus
from placement.dedup.ablation import ablation
from placement.dedup.anchor import anchor_layer
from placement.dedup.deadline import Deadline
from placement.dedup.evaluate import (
    dedup_cost,
    imbalance,
    layer_gpu_loads,
    remote_servers,
    server_cost,
    server_distance,
)
from placement.dedup.layers import LayerChoice, cheapest_layer, eplb_layer, to_gpus
from placement.dedup.popularity import flattened_weights
from placement.dedup.replicate import add_replicas
from placement.dedup.sample_bound import primary_caps, sample_bound
from placement.dedup.search import perturb_and_search, repair_balance, swap_search
from placement.dedup.start import coactivation_start, group_start
from placement.dedup.state import LayerState
from placement.dedup.trade import busiest_endpoint, busiest_gpu, straggler_trade
from placement.eplb import eplb
from placement.outcome import SolverOutcome, Termination
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    expected_cost,
)
from placement.spread import _counts_per_gpu
from traces.infra.errors import InputError

BALANCE_SLACK = 0.05  # busiest GPU at most 5 % above EPLB's busiest, per layer
_TIGHTEN = (1.0, 0.96, 0.9)  # server load cap factors tried when the GPU split misses
RANDOM_STARTS = 8  # extra random starts per layer for models without routing groups
# random restarts without improvement before a layer's search stops, by experts x servers:
# 3 up to DeepSeek-R1 on 4 servers (1,024), 1 above (R1 on 32 servers: 8,192)
ILS_PATIENCE = ((2048, 3), (None, 1))
HOLDOUT_BELOW_ROUTES = 16  # fitted routes per expert and server below which a third is held out




def _solve_layer(
    problem: PlacementProblem, li: int, x: np.ndarray, o: np.ndarray, cost: np.ndarray,
    near: np.ndarray, quota: np.ndarray, gpu_cap: float | None, ref: ExpertLayout | None,
    baselines: dict[str, np.ndarray], deadline: Deadline, rng: np.random.Generator,
) -> LayerChoice:
    """``baselines``: name -> server per expert [layers, experts] of the layouts a layer the
    time limit reaches first may take."""
    E, S = problem.num_experts, problem.num_servers
    gs = problem.gpu_server
    own = gs[o]
    cap, pcap = _server_caps(problem, quota)
    ref_layer = None if ref is None else ref.expert_gpus[li]
    base_li = {n: srv[li] for n, srv in baselines.items()}

    def cheapest(searched: list[LayerChoice], why: str) -> LayerChoice:
        return cheapest_layer(problem, x, o, cost, quota, pcap, gpu_cap, ref_layer, base_li,
                               searched, why)

    if deadline.search_passed():
        return cheapest([], "time limit")
    # With a sparse sample the held-out tokens decide (``_fit_single``): starts may then use
    # only the other tokens, and not EPLB's layout (fitted on the load of all of them).
    sparse = x.shape[0] * x.shape[1] < HOLDOUT_BELOW_ROUTES * E * S
    seen = np.arange(x.shape[0]) % 3 != 2 if sparse else np.ones(x.shape[0], dtype=bool)
    starts: list[tuple[str, np.ndarray]] = []
    g0 = group_start(x[seen], own[seen], E, problem.expert_groups, pcap)
    if g0 is not None:
        starts.append(("groups", g0))
    if ref is not None and not sparse:
        rs = gs[ref.expert_gpus[li, :, 0]]
        if np.array_equal(np.bincount(rs, minlength=S), pcap):
            starts.append(("eplb", rs))
    if not starts or problem.expert_groups < 2:
        starts.append(("co-activation", coactivation_start(x[seen], own[seen], E, pcap)))
    gps = problem.gpus_per_server.astype(np.float64)
    if problem.expert_groups < 2:  # no group structure to keep: random restarts are cheap
        starts += [("random", rng.permutation(np.repeat(np.arange(S), pcap)))
                   for _ in range(RANDOM_STARTS)]
    c0 = LayerState(x, cost, near, own, E, starts[0][1]).objective()
    last: LayerChoice | None = None
    for factor in _TIGHTEN:
        if last is not None and deadline.search_passed():
            break
        load_cap = None if gpu_cap is None else factor * gpu_cap * gps
        found = _fit_single(x, cost, near, own, E, starts, load_cap, deadline, rng)
        if found is None:
            continue
        st, name = found
        single = st.objective()
        free = cap - pcap
        within = []  # the searched layouts within the guard: with replicas, and without
        if free.sum():
            copies, gpu_load = to_gpus(problem, st, quota)
            if gpu_cap is None or gpu_load.max() <= gpu_cap + 1e-9:
                within.append(LayerChoice(copies, c0, single, single, name + " (no replicas)"))
            add_replicas(st, free, load_cap, deadline)
            swap_search(st, st.is_single(), load_cap, deadline)
        copies, gpu_load = to_gpus(problem, st, quota)
        last = LayerChoice(copies, c0, single, st.objective(), name)
        if gpu_cap is None or gpu_load.max() <= gpu_cap + 1e-9:
            within.append(last)
        if within:
            return cheapest(within, "cheaper than the search")
    if last is None:
        st = LayerState(x, cost, near, own, E, starts[0][1])
        c = st.objective()
        last = LayerChoice(to_gpus(problem, st, quota)[0], c, c, c, starts[0][0])
    return cheapest([dataclasses.replace(last, guard_missed=True)], "balance guard")


def _server_caps(problem: PlacementProblem, quota: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies per server of one layer (from its GPUs' ``quota``) and its primaries per server."""
    cap = np.bincount(problem.gpu_server, weights=quota,
                      minlength=problem.num_servers).astype(np.int64)
    return cap, primary_caps(cap, problem.num_experts)


def _straggler_trade(
    problem: PlacementProblem, layers: list[LayerChoice], o: np.ndarray,
    fit_cost: Callable[[int], np.ndarray], quota: np.ndarray, ref: ExpertLayout,
    baselines: dict[str, np.ndarray], info: dict[str, object],
) -> list[LayerChoice]:
    """``trade``: the layers as they are when their saving is worth their stragglers, else
    every layer above EPLB's busiest GPU replaced by its cheapest candidate within it
    (``fit_cost(layer)``: the cost the search minimised there); each layer anchored to EPLB's
    GPUs (``anchor``); and, when the trade binds, every layer with a busier server endpoint
    than EPLB's replaced by EPLB's layer."""
    sample = problem.token_sample
    assert sample is not None
    G, L = problem.num_gpus, problem.num_layers
    xs = [sample.experts[:, li, :].astype(np.int64) for li in range(L)]
    refs = [eplb_layer(problem, xs[li], o, fit_cost(li), ref.expert_gpus[li],
                       "eplb (straggler trade)") for li in range(L)]
    busy = np.array([busiest_gpu(G, xs[li], ly.copies) for li, ly in enumerate(layers)])
    ref_busy = np.array([busiest_gpu(G, xs[li], r.copies) for li, r in enumerate(refs)])
    trade = straggler_trade(layers, busy, np.array([r.final_cost for r in refs]), ref_busy)
    info["straggler_trade"] = trade.describe()
    over = [] if trade.worth_it else np.flatnonzero(busy > ref_busy + 1e-9).tolist()
    info["layers_balanced_by_trade"] = [
        problem.layer_indices[li] if problem.layer_indices else li for li in over]
    out = list(layers)
    for li in over:
        _, pcap = _server_caps(problem, quota[li])
        out[li] = cheapest_layer(
            problem, xs[li], o, fit_cost(li), quota[li], pcap, float(ref_busy[li]),
            ref.expert_gpus[li], {n: srv[li] for n, srv in baselines.items()},
            [dataclasses.replace(layers[li], guard_missed=True)], "straggler trade")
    # every layer on EPLB's GPUs where it has EPLB's servers, its busiest GPU at most the
    # higher of EPLB's and its own (``anchor``)
    out = [anchor_layer(problem, xs[li], ly, ref.expert_gpus[li, :, 0],
                        max(float(ref_busy[li]), busiest_gpu(G, xs[li], ly.copies)))
           for li, ly in enumerate(out)]
    # when the trade binds, a layer off EPLB's servers with a busier server endpoint than
    # EPLB's: EPLB's layer (the layer time, not the bytes, decides there)
    by_endpoint = []
    own = problem.gpu_server[o]
    for li, ly in enumerate(out):
        if ly.fallback or trade.worth_it:
            continue
        used = remote_servers(problem, xs[li], o, _build(problem, [ly]).expert_gpus[0])[0]
        ref_used = remote_servers(problem, xs[li], o, ref.expert_gpus[li])[0]
        if busiest_endpoint(used, own) > busiest_endpoint(ref_used, own):
            out[li] = refs[li]
            by_endpoint.append(problem.layer_indices[li] if problem.layer_indices else li)
    info["layers_eplb_by_endpoint"] = by_endpoint
    return out


def _fit_single(
    x: np.ndarray, cost: np.ndarray, near: np.ndarray, own: np.ndarray, E: int,
    starts: list[tuple[str, np.ndarray]], load_cap: np.ndarray | None, deadline: Deadline,
    rng: np.random.Generator,
) -> tuple[LayerState, str] | None:
    """The best single-copy layout of one layer: every start searched, the best restarted.

    With fewer than ``HOLDOUT_BELOW_ROUTES`` fitted routes per expert and server the sample
    cannot tell most swaps from noise: every third token is held out, the starts are searched
    on the rest, and the layout (a start or a searched one) cheapest on the held-out tokens is
    kept.
    """
    T, k = x.shape
    S = cost.shape[1]
    movable = np.ones(E, dtype=bool)
    patience = next(n for size, n in ILS_PATIENCE if size is None or E * S <= size)
    if T * k >= HOLDOUT_BELOW_ROUTES * E * S:
        best: tuple[float, LayerState, str] | None = None
        for name, s0 in starts:
            st = LayerState(x, cost, near, own, E, s0)
            if load_cap is not None and not repair_balance(st, movable, load_cap, deadline):
                continue
            swap_search(st, movable, load_cap, deadline)
            if best is None or st.objective() < best[0]:
                best = (st.objective(), st, name)
        if best is None:
            return None
        perturb_and_search(best[1], movable, load_cap, deadline, rng, patience)
        return best[1], best[2]
    hold = np.arange(T) % 3 == 2  # the same split as the starts' (``_solve_layer``)
    fit = ~hold
    part_cap = None if load_cap is None else load_cap * fit.sum() / T
    cands: list[tuple[str, np.ndarray, bool]] = []
    for name, s0 in starts:
        cands.append((name, s0, False))
        sa = LayerState(x[fit], cost[fit], near[fit], own[fit], E, s0)
        if part_cap is not None and not repair_balance(sa, movable, part_cap, deadline):
            continue
        swap_search(sa, movable, part_cap, deadline)
        cands.append((name, sa.srv.copy(), True))
    scores = [LayerState(x[hold], cost[hold], near[hold], own[hold], E, srv).objective()
              for _, srv, _ in cands]
    name, srv, searched = cands[int(np.argmin(scores))]
    st = LayerState(x, cost, near, own, E, srv)
    if load_cap is not None and not repair_balance(st, movable, load_cap, deadline):
        return None
    return st, name + (" (searched)" if searched else " (held-out tokens kept it)")


def _build(problem: PlacementProblem, layers: list[LayerChoice]) -> ExpertLayout:
    L, E = problem.num_layers, problem.num_experts
    reps = max(max(np.bincount([e for e, _ in ly.copies], minlength=E)) for ly in layers)
    out = np.full((L, E, int(reps)), -1, dtype=np.int64)
    for li, ly in enumerate(layers):
        nxt = np.zeros(E, dtype=np.int64)
        for e, g in ly.copies:
            out[li, e, nxt[e]] = g
            nxt[e] += 1
    return ExpertLayout(out, problem.num_gpus)


def solve_dedup(
    problem: PlacementProblem, options: SolverOptions, name: str, metric: str,
    origin_blind: bool = False, clock: Callable[[], float] = time.perf_counter,
) -> PlacementResult:
    """``clock``: the time limit's clock (tests replace it by one that counts its readings)."""
    deadline = Deadline.after(options.time_limit_s, clock)
    t0 = deadline.start_s
    sample = problem.token_sample
    if sample is None:
        raise InputError(
            f"{name} needs per-token routing (which experts each token uses together, and where"
            " it starts): give a native trace (--stats trace.parquet); load statistics carry only"
            " counts per expert"
        )
    L, E, G = problem.num_layers, problem.num_experts, problem.num_gpus
    quota, forced = _quotas(problem)
    o = sample.origin_gpu.astype(np.int64)
    own = problem.gpu_server[o]
    cost = server_cost(problem, metric)[o]
    if origin_blind:  # every token as if it started on a GPU drawn at random
        cost = np.broadcast_to(server_cost(problem, metric).mean(axis=0), cost.shape).copy()
    near = server_distance(problem)[o]
    info: dict[str, object] = {"metric": metric, "sample_tokens": sample.num_tokens,
                               "flatten_popularity": options.flatten_popularity}
    ref, ref_loads, gpu_cap = _balance_guard(problem, options, info)
    # The search stops by itself (no improving swap; a fixed number of restarts), so the
    # result does not depend on the machine's speed; the time limit is only a safety stop:
    # layers it reaches first take EPLB's layer unsearched, and the bound and the ablation
    # are computed only in the time left.
    # Each layer's search gets an even share of the searches' time left, so a short limit
    # shortens every layer's search instead of leaving the last layers unsearched.
    baselines = {n: problem.gpu_server[f(L, E, G)]
                 for n, f in (("round-robin", round_robin_gpus), ("contiguous", contiguous_gpus))}
    def fit_cost(li: int) -> np.ndarray:
        """What the search minimises on layer li: the sample's cost, weighted when flattening."""
        if not options.flatten_popularity:
            return cost
        x = sample.experts[:, li, :].astype(np.int64)
        return cost * flattened_weights(x, E, options.flatten_popularity)[:, None]

    layers: list[LayerChoice] = []
    for li in range(L):
        rng = np.random.default_rng([options.seed, li])
        layers.append(_solve_layer(
            problem, li, sample.experts[:, li, :].astype(np.int64), o, fit_cost(li), near,
            quota[li],
            None if gpu_cap is None else float(gpu_cap[li]), ref, baselines,
            deadline.share(L - li), rng,
        ))
    info["stopped_by_time_limit"] = deadline.search_passed()
    cut = _layer_lists(problem, layers)["layers_cut_by_time_limit"]  # before the trade
    if ref is not None and gpu_cap is None and not problem.num_redundant:
        layers = _straggler_trade(problem, layers, o, fit_cost, quota, ref, baselines, info)
    layout = _build(problem, layers)
    exact = dedup_cost(problem, layout, metric)
    bound, bound_kind = sample_bound(problem, cost, own, quota, options, forced, deadline)
    obj = exact.cost_per_token
    stopped = bool(info["stopped_by_time_limit"])
    outcome = SolverOutcome.from_bound(
        objective=obj, dual_bound=bound, gap_tolerance=1e-9,
        termination=Termination.TIME_LIMIT if stopped else None,
        solver_status=("time limit reached" if stopped else "local search converged")
        + f"; bound: {bound_kind}", time_s=clock() - t0,
    )
    gap = outcome.gap
    T = sample.num_tokens
    loads = layer_gpu_loads(problem, layout)
    info.update(
        dedup_cost_per_token=obj, lower_bound=bound, bound_kind=bound_kind,
        copies_per_token_layer=exact.copies_per_token_layer,
        routes_per_token_layer=exact.routes_per_token_layer,
        replicas_used=int((layout.expert_gpus >= 0).sum() - L * E),
        gpu_load_imbalance=imbalance(loads),
        **{**_layer_lists(problem, layers), "layers_cut_by_time_limit": cut},
    )
    info["ablation"] = ("not computed (time limit)" if deadline.passed() else
                        ablation(problem, layout, sum(ly.start_cost for ly in layers),
                                 sum(ly.single_cost for ly in layers), metric, exact,
                                 options.seed))
    if ref is not None:
        re = dedup_cost(problem, ref, metric)
        info["eplb_cost_per_token"] = re.cost_per_token
        info["eplb_copies_per_token_layer"] = re.copies_per_token_layer
        info["eplb_gpu_load_imbalance"] = imbalance(ref_loads) if ref_loads is not None else None
    msg = _message(metric, T, bound_kind, gap, info)
    return PlacementResult(
        strategy=name, status=outcome.status, layout=layout,
        objective=expected_cost(problem, layout), runtime_s=clock() - t0,
        options=options, message=msg, info=info, solver=outcome,
    )


def _quotas(problem: PlacementProblem) -> tuple[np.ndarray, bool]:
    """Copies per GPU and layer [L, G], and whether that leaves no choice of counts."""
    L, G = problem.num_layers, problem.num_gpus
    phys = problem.physical_per_layer
    m = problem.max_per_gpu_per_layer
    if phys == G * m and problem.slots_per_gpu >= L * m:  # every GPU full in every layer
        quota = np.full((L, G), m, dtype=np.int64)
    else:
        quota = _counts_per_gpu(np.full(L, phys), G, m, problem.slots_per_gpu)
    forced = bool((quota == m).all() and problem.slots_per_gpu == L * m)
    return quota, forced


def _balance_guard(
    problem: PlacementProblem, options: SolverOptions, info: dict[str, object],
) -> tuple[ExpertLayout | None, np.ndarray | None, np.ndarray | None]:
    """EPLB's layout (the reference), its GPU loads per layer, and the busiest GPU's cap per
    layer the search must keep (None: no guard); ``info["balance_guard"]`` says which."""
    sample = problem.token_sample
    assert sample is not None
    ref = None
    try:
        ref_res = eplb(problem, options)
        ref = ref_res.layout if ref_res.is_ok else None
    except InputError as exc:
        info["balance_guard"] = f"off: no EPLB reference ({exc})"
    ref_loads = layer_gpu_loads(problem, ref) if ref is not None else None
    gpu_cap = None
    if ref_loads is not None and problem.num_redundant:
        gpu_cap = (1 + BALANCE_SLACK) * ref_loads.max(axis=1)
        info["balance_guard"] = f"busiest GPU per layer <= {1 + BALANCE_SLACK:g} x EPLB's"
    elif "balance_guard" not in info:
        info["balance_guard"] = "off (no replicas; --balance-eps sets one)"
    if problem.balance_eps is not None:
        mean = np.full(problem.num_layers, sample.num_tokens * sample.top_k / problem.num_gpus)
        eps_cap = (1 + problem.balance_eps) * mean
        gpu_cap = eps_cap if gpu_cap is None else np.minimum(gpu_cap, eps_cap)
    return ref, ref_loads, gpu_cap


def _layer_lists(problem: PlacementProblem, layers: list[LayerChoice]) -> dict[str, object]:
    """Which layers (by the model's layer index) fell back, were cut or missed the guard."""
    def index(i: int) -> int:
        return problem.layer_indices[i] if problem.layer_indices else i

    return {
        "layers_from_eplb": [index(i) for i, ly in enumerate(layers) if ly.fallback],
        "layers_cut_by_time_limit": [index(i) for i, ly in enumerate(layers)
                                     if ly.start_name.endswith("(time limit)")],
        "layers_missing_balance": [index(i) for i, ly in enumerate(layers) if ly.guard_missed],
        "starts_won": {n: sum(ly.start_name == n for ly in layers)
                       for n in sorted({ly.start_name for ly in layers})},
    }


def _message(metric: str, tokens: int, bound_kind: str, gap: float,
             info: dict[str, object]) -> str:
    cut = info["layers_cut_by_time_limit"]
    assert isinstance(cut, list)
    return (
        f"de-duplicated {metric} cost on {tokens} fitted tokens: swap local search from routing"
        f" groups / co-activation; lower bound: {bound_kind}, gap {gap:.3g}"
        + (f"; {len(cut)} layers unsearched" if cut else "")
        + ("; the time limit stopped the search (raise it for a result independent of the"
           " machine's speed)" if info["stopped_by_time_limit"] else "")
    )


def dedup(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """Round-trip hops per remote server a token is sent to (de-duplicated dispatch)."""
    return solve_dedup(problem, options, "dedup", "hops")


def dedup_bytes(problem: PlacementProblem, options: SolverOptions) -> PlacementResult:
    """The same in seconds on the wire (dispatch + combine bytes x seconds per byte)."""
    return solve_dedup(problem, options, "dedup-bytes", "wire")
