"""Migration-aware re-placement for ``dedup`` and ``dedup-bytes``: a move-limited swap search
started from the layout in force and a walk towards the full re-fit, with an exact budget.

The de-duplicated cost (a token crosses the network once per remote server hosting any of its
experts) is a set cover per token: not an assignment, and a linearisation on a token sample
would price a pair of co-activated experts twice.  The search keeps the exact cost instead
(:class:`placement.dedup.state.LayerState`, exact deltas on the window's token sample) and
minimises, per MoE layer, over the next ``horizon_tokens`` tokens

    horizon / T x dedup cost on the sample x (dispatch + combine) / 2  +  move_weight x W x dist

in byte-hops (``dedup``; ``dedup-bytes``: seconds on the wire, the moves at the route's seconds
per byte), the same scale as :func:`placement.migration.replace_with_move_cost`.

1. Every layer starts from its layout in force.  A round scores every pair of single-copy
   experts on different servers by their exact move deltas (the best few per server pair, as
   :func:`placement.dedup.search.swap_search`), then applies in order of exact gain every swap
   of their GPUs that improves the objective and keeps every GPU within the balance goal.  A
   swap keeps each GPU's expert count per layer, so slots hold throughout.  The applied swaps
   are the layer's sequence, each with its exact gain and the moves it adds (a swap moving an
   expert back to its old GPU frees a move).
2. The budget (``floor(B / W)`` new copies over all layers) is spent on those sequences by a
   greedy merge: the next swap of the layer with the highest gain per move, while it fits; a
   layer whose next swap does not fit stops there (its later swaps depend on it).  The result
   never moves more than the budget: it is a prefix of every layer's sequence.
3. The walk of :mod:`placement.migration_walk` (towards the full re-fit relabelled per layer
   and server, its hull prefixes merged the same way) is kept instead when it is cheaper; so
   is its way back (the same walk's end returned to the layout in force, least loss per move
   first, read forward; a layer whose way back is blocked keeps its walk), the swap search's
   way back (its end returned the same way, read forward: the swaps that gain only together
   are bought together, where step 2 buys them one by one in the order found), and the
   relabelled full re-fit itself when it fits the budget and is cheaper still.
4. Refinement from the layout kept, each round kept only when cheaper, until a round of both
   gains nothing (at most ``REFINE_ROUNDS``): *overshoot and prune*, swaps from it with no
   budget until none improves, then their way back to the layout in force read forward and
   merged within the budget (a layer whose way back is blocked keeps its moves); and an
   *exchange round*, swaps within the budget left where the exchanges that spend no move are
   checked too (a moved expert back to its old GPU with an expert there taking its place, or
   two moved experts exchanging GPUs), so that with the budget spent a move that buys little is
   traded for one that buys more.  Every candidate is a layout within the budget and the
   balance goal, so the result is too, and it is never costlier on the sample than the
   cheapest of step 3 (the method before step 4 existed).

Balance goal: no swap (nor walk step) takes a GPU above ``max(goal, its load)``, the goal
being the busiest GPU of the layer under the full re-fit (routes on the sample): balance never
ends worse than the layout in force or the full re-fit, whichever is worse per layer (the
re-fit of ``dedup`` without replicas carries no balance guard of its own).

Local search: the result carries no lower bound (``feasible``); the search stops by itself (no
improving swap), the time limit is a safety stop reported in ``info``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from placement.dedup.deadline import Deadline
from placement.dedup.evaluate import dedup_cost, server_cost, server_distance
from placement.dedup.search import EPS, _top_per_pair
from placement.dedup.state import LayerState
from placement.migration import INTRA_SERVER_MOVE_HOPS, check_move_terms, plan_migration
from placement.migration_walk import (
    WalkStep,
    hull_segments,
    merge_by_rate,
    relabel_within_servers,
    unwalk_layer,
    walk_layer,
)
from placement.outcome import SolverOutcome, Termination
from placement.problem import (
    ExpertLayout,
    PlacementProblem,
    PlacementResult,
    SolverOptions,
    expected_cost,
)
from traces.infra.errors import InputError

METRICS = {"dedup": "hops", "dedup-bytes": "wire"}
CHECKS_PER_ROUND = 256  # exact swap deltas evaluated per round and layer
REFINE_ROUNDS = 8  # step 4's rounds at most (each a swap search of every layer)


@dataclass(frozen=True)
class _Swap:
    a: int  # expert moving to b's GPU
    b: int  # expert moving to a's GPU
    gain: float  # exact decrease of the layer's objective (byte-hops)
    moves: int  # moved experts added (negative when experts return)


def move_unit(problem: PlacementProblem, metric: str) -> np.ndarray:
    """Cost of moving one weight byte from GPU to GPU, [gpus, gpus], in the metric's unit per
    byte: hops (``hops``) or seconds on the route (``wire``); a move inside a server costs
    ``INTRA_SERVER_MOVE_HOPS`` of the cheapest network one (never free), 0 on the same GPU."""
    if metric == "hops":
        unit = problem.distance.astype(np.float64)
    else:
        spb = problem.pair_seconds_per_byte
        if spb is None:
            raise InputError("dedup-bytes: moves on the wire need pair_seconds_per_byte")
        unit = spb.astype(np.float64)
    cross = problem.gpu_server[:, None] != problem.gpu_server[None, :]
    floor = INTRA_SERVER_MOVE_HOPS * float(unit[cross & (unit > 0)].min()) if (
        cross & (unit > 0)).any() else INTRA_SERVER_MOVE_HOPS
    out = np.maximum(unit, floor)
    np.fill_diagonal(out, 0.0)
    return out


class LayerSearch:
    """One layer: servers in a :class:`LayerState`, GPUs beside it, moves counted from ``init``."""

    def __init__(self, problem: PlacementProblem, x: np.ndarray, cost: np.ndarray,
                 near: np.ndarray, own: np.ndarray, init: np.ndarray, scale: float,
                 move_price: np.ndarray, goal: float) -> None:
        self.gs = problem.gpu_server
        self.init, self.gpu = init, init.copy()
        self.st = LayerState(x, cost, near, own, problem.num_experts, self.gs[init])
        self.scale, self.price = scale, move_price  # price[e, g]: moving e from init[e] to g
        self.load = np.bincount(init[self.st.r_exp], minlength=problem.num_gpus).astype(float)
        self.allowed = np.maximum(self.load, goal)  # no GPU ends above max(goal, its load)
        self.w = self.st.weight.astype(np.float64)

    def _moved(self, e: int, g: int) -> int:
        return int(g != self.init[e])

    def moves(self) -> int:
        """Experts off their GPU in the layout in force."""
        return int((self.gpu != self.init).sum())

    def place(self, gpus: np.ndarray) -> None:
        """Every expert to ``gpus[e]`` (a layout reached by swaps: slots hold); moves still
        count from ``init`` and the balance goal stays the one set from it."""
        srv = self.gs[gpus]
        for e in np.flatnonzero(srv != self.st.srv).tolist():
            self.st.apply_move(e, int(srv[e]))
        self.gpu = gpus.astype(np.int64).copy()
        self.load = np.bincount(self.gpu[self.st.r_exp], minlength=len(self.gs)).astype(float)

    def swap_value(self, a: int, b: int) -> tuple[float, int] | None:
        """(exact gain, moves added) of a and b exchanging GPUs; None when balance forbids."""
        ga, gb = int(self.gpu[a]), int(self.gpu[b])
        shift = self.w[a] - self.w[b]
        if (self.load[ga] - shift > self.allowed[ga] + EPS
                or self.load[gb] + shift > self.allowed[gb] + EPS):
            return None
        p = self.price
        gain = -self.scale * self.st.swap_delta(a, b) + (p[a, ga] + p[b, gb] - p[a, gb]
                                                         - p[b, ga])
        moves = (self._moved(a, gb) + self._moved(b, ga) - self._moved(a, ga)
                 - self._moved(b, gb))
        return gain, moves

    def apply(self, a: int, b: int) -> None:
        ga, gb = int(self.gpu[a]), int(self.gpu[b])
        shift = self.w[a] - self.w[b]
        self.st.apply_swap(a, b)
        self.gpu[a], self.gpu[b] = gb, ga
        self.load[ga] -= shift
        self.load[gb] += shift

    def candidates(self) -> list[tuple[int, int]]:
        """Pairs (a, b) on different servers, best first by the sum of their move deltas and
        prices (the swap's exact value is computed for each)."""
        st = self.st
        S = st.S
        delta = self.scale * st.move_deltas()
        delta[np.arange(st.E), st.srv] = np.inf
        # a move's price towards server B: the cheapest GPU of B for it (a bound of the swap's)
        pb = np.stack([self.price[:, self.gs == s].min(axis=1) for s in range(S)], axis=1)
        pb -= self.price[np.arange(st.E), self.gpu][:, None]
        delta = delta + pb
        m = 8
        top = _top_per_pair(delta, st.srv, S, m)
        ia, ib = np.triu_indices(S, 1)
        a, b = top[ia, ib], top[ib, ia]
        da = np.where(a >= 0, delta[np.maximum(a, 0), ib[:, None]], np.inf)
        db = np.where(b >= 0, delta[np.maximum(b, 0), ia[:, None]], np.inf)
        approx = (da[:, :, None] + db[:, None, :]).reshape(-1)
        pa = np.broadcast_to(a[:, :, None], (len(ia), m, m)).reshape(-1)
        pb2 = np.broadcast_to(b[:, None, :], (len(ia), m, m)).reshape(-1)
        good = np.flatnonzero(approx < -EPS)
        good = good[np.argsort(approx[good], kind="stable")][:CHECKS_PER_ROUND]
        return [(int(pa[c]), int(pb2[c])) for c in good]

    def exchanges(self) -> list[tuple[int, int]]:
        """Swaps that spend no move, on different servers: a moved expert ``a`` back to its
        old GPU with an expert ``b`` there taking ``a``'s place, and two moved experts
        exchanging GPUs (they stay moved).  With the budget spent, these trade a move that
        buys little for one that buys more; the exact value is computed for each."""
        gs, gpu = self.gs, self.gpu
        moved = np.flatnonzero(gpu != self.init)
        pairs = []
        for a in moved.tolist():
            home = int(self.init[a])
            if gs[home] != gs[gpu[a]]:
                pairs += [(a, int(b)) for b in np.flatnonzero(gpu == home)]
        for i, a in enumerate(moved.tolist()):
            pairs += [(a, int(b)) for b in moved[i + 1:] if gs[gpu[b]] != gs[gpu[a]]]
        return pairs

    def run(self, max_moves: int, deadline: Deadline, exchanges: bool = False) -> list[_Swap]:
        """Improving swaps until none is left (or the deadline), in the order applied, the
        layer moving at most ``max_moves`` experts in all; ``exchanges``: the pairs of
        :meth:`exchanges` are checked as well."""
        seq: list[_Swap] = []
        moved = self.moves()
        while not deadline.search_passed():
            scored = []
            pairs = self.candidates()
            if exchanges:
                seen = set(pairs)
                pairs += [p for p in self.exchanges() if p not in seen]
            for a, b in pairs:
                v = self.swap_value(a, b)
                if v is not None and v[0] > EPS:
                    scored.append((v[0] / max(v[1], 1), a, b))
            scored.sort(reverse=True)
            touched: set[int] = set()
            applied = 0
            for _, a, b in scored:
                if a in touched or b in touched:
                    continue
                v = self.swap_value(a, b)  # exact again: earlier swaps changed the state
                if v is None or v[0] <= EPS or moved + v[1] > max_moves:
                    continue
                self.apply(a, b)
                moved += v[1]
                touched.update((a, b))
                seq.append(_Swap(a, b, v[0], v[1]))
                applied += 1
            if not applied:
                break
        return seq


def _prefixes(current: ExpertLayout, seqs: Sequence[Sequence[_Swap | WalkStep]],
              taken: list[int]) -> ExpertLayout:
    """The layout in force with the first ``taken[l]`` swaps of every layer's sequence."""
    gpus = current.primary.astype(np.int64).copy()
    for li, (seq, n) in enumerate(zip(seqs, taken, strict=True)):
        for sw in seq[:n]:
            gpus[li, sw.a], gpus[li, sw.b] = gpus[li, sw.b], gpus[li, sw.a]
    return ExpertLayout.from_primary(gpus, current.num_gpus)


def _placed(layout: ExpertLayout, layer_args: Sequence[tuple]) -> list[LayerSearch]:
    searches = [LayerSearch(*args) for args in layer_args]
    for li, s in enumerate(searches):
        s.place(layout.primary[li])
    return searches


def _exchange_round(layout: ExpertLayout, layer_args: Sequence[tuple], max_moves: int,
                    deadline: Deadline) -> ExpertLayout:
    """Swap rounds from ``layout`` (moves still counted from the layout in force) within the
    budget left, the exchanges that spend no move included, merged as in step 2."""
    searches = _placed(layout, layer_args)
    left = max_moves - sum(s.moves() for s in searches)
    seqs = [s.run(s.moves() + left, deadline, exchanges=True) for s in searches]
    return _prefixes(layout, seqs, merge_by_rate(seqs, left))


def _overshoot_round(layout: ExpertLayout, layer_args: Sequence[tuple], max_moves: int,
                     deadline: Deadline) -> ExpertLayout:
    """Swaps from ``layout`` with no budget until none improves, then the way back from there
    to the layout in force (:func:`unwalk_layer`) read forward, its hull prefixes merged
    within the budget; a layer whose way back is blocked keeps ``layout``'s and its moves."""
    gpus = layout.primary.astype(np.int64).copy()
    paths: list[list[WalkStep]] = []
    fixed, reserved, inits = [], 0, []
    for s in _placed(layout, layer_args):
        inits.append(s.init)  # the layout in force (moves count from it)
        before = s.moves()
        s.run(len(s.init), deadline)
        back = unwalk_layer(s, deadline)
        blocked = not back and s.moves() > 0
        fixed.append(blocked)
        reserved += before if blocked else 0
        paths.append([] if blocked else back)
    hulls = [hull_segments(p) for p in paths]
    taken = merge_by_rate(hulls, max_moves - reserved)
    for li, (path, hull, n) in enumerate(zip(paths, hulls, taken, strict=True)):
        if fixed[li]:
            continue
        row = inits[li].astype(np.int64)  # a copy
        for sw in path[:hull[n - 1].end if n else 0]:
            row[sw.a], row[sw.b] = row[sw.b], row[sw.a]
        gpus[li] = row
    return ExpertLayout.from_primary(gpus, layout.num_gpus)


def _refine(layout: ExpertLayout, layer_args: Sequence[tuple], max_moves: int,
            deadline: Deadline, value: Callable[[ExpertLayout], float]
            ) -> tuple[ExpertLayout, int]:
    """Step 4: overshoot-and-prune and exchange rounds from ``layout``, each kept only when
    cheaper, until a pair of rounds gains nothing; returns the layout and the rounds kept."""
    kept = 0
    for _ in range(REFINE_ROUNDS):
        better = False
        for step in (_overshoot_round, _exchange_round):
            if deadline.search_passed():
                return layout, kept
            lay = step(layout, layer_args, max_moves, deadline)
            if value(lay) < value(layout) - EPS:
                layout, better, kept = lay, True, kept + 1
        if not better:
            break
    return layout, kept


def _hull_prefixes(current: ExpertLayout, walks: Sequence[Sequence[_Swap | WalkStep]],
                   max_moves: int) -> ExpertLayout:
    """The walks' hull prefixes merged by gain per move within ``max_moves``, applied."""
    hulls = [hull_segments(w) for w in walks]
    taken = merge_by_rate(hulls, max_moves)
    return _prefixes(current, walks, [h[n - 1].end if n else 0
                                      for h, n in zip(hulls, taken, strict=True)])


def replace_dedup_with_moves(
    problem: PlacementProblem,
    options: SolverOptions,
    strategy: str,
    current: ExpertLayout,
    fresh: ExpertLayout,
    horizon_tokens: float,
    weight_bytes: float,
    move_weight: float = 0.0,
    budget_bytes: float | None = None,
) -> PlacementResult:
    """The module docstring's re-placement; ``fresh``: the strategy's full re-fit on the same
    problem (the balance goal, and the layout kept when it fits and is cheaper)."""
    if strategy not in METRICS:
        raise InputError(f"migration-aware dedup re-placement is for {sorted(METRICS)}")
    sample = problem.token_sample
    if sample is None:
        raise InputError(f"{strategy}: migration-aware re-placement needs the window's tokens")
    if (current.expert_gpus >= 0).sum(axis=2).max() > 1 or problem.num_redundant:
        raise InputError("migration-aware re-placement: replicas are not supported with"
                         " --move-weight/--move-budget; use --policy periodic without them")
    check_move_terms(horizon_tokens, move_weight, budget_bytes)
    t0 = time.perf_counter()
    deadline = Deadline.after(options.time_limit_s)
    metric = METRICS[strategy]
    L, E = problem.num_layers, problem.num_experts
    T = sample.num_tokens
    per_copy = 0.5 * (problem.dispatch_bytes + problem.combine_bytes) if metric == "hops" else 1.0
    scale = horizon_tokens / T * per_copy
    unit = move_unit(problem, metric) * move_weight * weight_bytes
    max_moves = L * E if budget_bytes is None else int(budget_bytes // weight_bytes)
    o = sample.origin_gpu.astype(np.int64)
    cost, near = server_cost(problem, metric)[o], server_distance(problem)[o]
    own = problem.gpu_server[o]
    target = relabel_within_servers(problem, current, fresh, options)
    seqs: list[list[_Swap]] = []
    walks: list[list[WalkStep]] = []
    backs: list[list[WalkStep]] = []
    search_backs: list[Sequence[_Swap | WalkStep]] = []
    layer_args = []
    for li in range(L):
        x = sample.experts[:, li, :].astype(np.int64)
        init = current.primary[li].astype(np.int64)
        goal = float(np.bincount(fresh.primary[li][x].ravel(), minlength=problem.num_gpus).max())
        args = (problem, x, cost, near, own, init, scale, unit[init], goal)
        layer_args.append(args)
        searcher = LayerSearch(*args)
        seqs.append(searcher.run(max_moves, deadline))
        search_backs.append(unwalk_layer(searcher, deadline) or seqs[-1])
        walker = LayerSearch(*args)
        walks.append(walk_layer(walker, target.primary[li], deadline))
        backs.append(unwalk_layer(walker, deadline) or walks[-1])
    layout = _prefixes(current, seqs, merge_by_rate(seqs, max_moves))
    walked, returned, searched_back = (
        _hull_prefixes(current, w, max_moves) for w in (walks, backs, search_backs))

    def value(lay: ExpertLayout) -> float:
        traffic = dedup_cost(problem, lay, metric).cost_per_token * T * scale
        plan = plan_migration(current, lay, problem.distance)
        return traffic + float(unit[plan.src_gpu, plan.dst_gpu].sum())

    kept = "search"
    values = {"search": value(layout)}
    for name, lay in (("walk", walked), ("walk back", returned), ("search back", searched_back)):
        values[name] = value(lay)
        if values[name] < value(layout) - EPS:
            layout, kept = lay, name
    if (plan_migration(current, target, problem.distance).num_moves <= max_moves
            and value(target) < value(layout) - EPS):
        layout, kept = target, "full re-fit"
    values["kept"] = value(layout)
    layout, rounds = _refine(layout, layer_args, max_moves, deadline, value)
    values["refined"] = value(layout)
    moves = plan_migration(current, layout, problem.distance).num_moves
    assert moves <= max_moves, (moves, max_moves)  # every candidate is within the budget
    stopped = deadline.search_passed()
    outcome = SolverOutcome.from_bound(
        objective=value(layout), dual_bound=float("nan"),
        termination=Termination.TIME_LIMIT if stopped else None,
        solver_status=("time limit reached" if stopped else "swap search converged")
        + "; no bound (local search)", time_s=time.perf_counter() - t0)
    exact = dedup_cost(problem, layout, metric)
    info: dict[str, object] = {
        "metric": metric, "sample_tokens": T, "moved_bytes": moves * weight_bytes,
        "moves": moves, "move_weight": move_weight, "move_budget_bytes": budget_bytes,
        "kept": kept, "refine_rounds": rounds, "values": values,
        "swaps_found": sum(len(s) for s in seqs),
        "walk_steps": sum(len(w) for w in walks),
        "walk_back_layers": sum(b is not w for b, w in zip(backs, walks, strict=True)),
        "dedup_cost_per_token": exact.cost_per_token,
        "copies_per_token_layer": exact.copies_per_token_layer,
        "stopped_by_time_limit": stopped,
    }
    return PlacementResult(
        strategy=f"{strategy}+move", status=outcome.status, layout=layout,
        objective=expected_cost(problem, layout), runtime_s=time.perf_counter() - t0,
        options=options, message=f"move-limited swap search from the layout in force ({kept})",
        info=info, solver=outcome)
