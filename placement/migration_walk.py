"""Budgeted ``dedup`` re-placement by path-relinking: from the layout in force towards the
full re-fit, best exact gain per move first.

1. Symmetry first (:func:`relabel_within_servers`).  De-duplicated copies depend only on
   which server holds each expert, and a layer's balance only on the multiset of its GPUs'
   loads: permuting the GPUs of one server within one layer changes neither.  Per layer and
   server, the full re-fit's GPUs are matched to the layer in force's (a maximum-overlap
   assignment, exact), so that an expert whose server does not change does not move at all.
2. The walk (:func:`walk_layer`), per layer: while an expert is off its target GPU, exchange
   GPUs between such an expert ``a`` and an expert ``b`` now on ``a``'s target GPU (so slots
   hold throughout and every step puts ``a`` in place).  Of all such swaps allowed by the
   balance goal, the one with the best exact gain per move added is taken (the objective of
   :mod:`placement.migration_dedup`, exact deltas on the window's sample; the exact value is
   computed for the ``CHECKS_PER_STEP`` swaps ranked best by their experts' single-move
   deltas); the walk ends at the target or when none of those swaps is allowed.
3. The budget: a walk's prefixes are points (moves, gain); only the prefixes on the upper
   concave hull are candidates (a group of co-activated experts gains only once all of it has
   moved: the hull spans the zero-gain steps in between).  Hull segments of every layer are
   taken by the best gain per move first while they fit (:func:`merge_by_rate`), so the
   result never moves more than the budget.
4. The way back (:func:`unwalk_layer`): from the walk's end, return the experts to the layout
   in force one swap at a time, the swap losing the least exact gain per move freed first,
   and read that path the other way round.  A group of co-activated experts saves its copy
   only once all of it has moved: walking forward, its first moves gain nothing and look no
   better than any other; walking back, breaking the group loses its whole gain at the first
   return and its other members then return for free, so the groups worth most per move are
   the last to go back and the first on the path read forward.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from placement.dedup.deadline import Deadline
from placement.dedup.search import EPS
from placement.dedup.state import LayerState
from placement.migration import max_assignment
from placement.problem import ExpertLayout, PlacementProblem, SolverOptions

CHECKS_PER_STEP = 16  # exact swap values computed per walk step (best by summed move deltas)


class Search(Protocol):
    """One layer's search state (:class:`placement.migration_dedup.LayerSearch`)."""

    init: np.ndarray  # every expert's GPU in the layout in force (moves count from it)
    gpu: np.ndarray  # every expert's GPU now
    gs: np.ndarray  # every GPU's server
    scale: float
    st: LayerState

    def swap_value(self, a: int, b: int) -> tuple[float, int] | None: ...

    def apply(self, a: int, b: int) -> None: ...


class Step(Protocol):
    """A swap, walk step or hull segment: its exact gain and the moves it adds."""

    @property
    def gain(self) -> float: ...

    @property
    def moves(self) -> int: ...


@dataclass(frozen=True)
class Segment:
    """Walk steps ``[start, end)`` of one layer taken together: their gain and moves."""

    gain: float
    moves: int
    end: int


def relabel_within_servers(problem: PlacementProblem, current: ExpertLayout,
                           new: ExpertLayout, options: SolverOptions) -> ExpertLayout:
    """``new`` (single copy) with, per layer and server, its GPUs permuted so that the most
    experts stay on their GPU in ``current``; copies and every layer's GPU loads unchanged."""
    gs = problem.gpu_server
    cur, out = current.primary, new.primary.copy()
    for li in range(out.shape[0]):
        for s in np.unique(gs):
            gpus = np.flatnonzero(gs == s)
            if len(gpus) < 2:
                continue
            pos = np.full(problem.num_gpus, -1)
            pos[gpus] = np.arange(len(gpus))
            a, b = pos[new.primary[li]], pos[cur[li]]
            both = (a >= 0) & (b >= 0)
            overlap = np.zeros((len(gpus), len(gpus)))
            np.add.at(overlap, (a[both], b[both]), 1.0)
            if not overlap.any():
                continue
            perm = gpus[max_assignment(overlap, options)]
            mine = a >= 0
            out[li, mine] = perm[a[mine]]
    return ExpertLayout.from_primary(out, new.num_gpus)


@dataclass(frozen=True)
class WalkStep:
    a: int
    b: int
    gain: float
    moves: int


def _ranked_pairs(search: Search, off: np.ndarray, dest: np.ndarray) -> list[tuple[int, int]]:
    """The ``CHECKS_PER_STEP`` swaps (a, b) that put an expert ``a`` of ``off`` on ``dest[a]``
    with an expert ``b`` of ``off`` there, best first by their experts' single-move deltas."""
    delta = search.scale * search.st.move_deltas()
    pairs = []
    for a in off.tolist():
        there = off[search.gpu[off] == dest[a]]
        for b in there.tolist():
            approx = delta[a, search.gs[dest[a]]] + delta[b, search.gs[search.gpu[a]]]
            pairs.append((float(approx), int(a), int(b)))
    pairs.sort()
    return [(a, b) for _, a, b in pairs[:CHECKS_PER_STEP]]


def walk_layer(search: Search, target: np.ndarray, deadline: Deadline) -> list[WalkStep]:
    """Step 2 of the module docstring; applies the steps to ``search``."""
    steps: list[WalkStep] = []
    while not deadline.search_passed():
        off = np.flatnonzero(search.gpu != target)
        if not off.size:
            break
        best: tuple[float, float, int, int, int] | None = None
        for a, b in _ranked_pairs(search, off, target):
            v = search.swap_value(a, b)
            if v is None:
                continue
            gain, moves = v
            key = gain / max(moves, 0.5) if gain > 0 else gain * max(moves, 0.5)
            if best is None or key > best[0] + EPS:
                best = (key, gain, moves, a, b)
        if best is None:
            break
        _, gain, moves, a, b = best
        search.apply(a, b)
        steps.append(WalkStep(a, b, gain, moves))
    return steps


def unwalk_layer(search: Search, deadline: Deadline) -> list[WalkStep]:
    """Step 4 of the module docstring: from where ``search`` is back to its starting layout
    (``search.init``), the swap losing the least exact gain per move freed first; returns the
    path the other way round (from the start towards where ``search`` was), as walk steps.
    Empty when the way back is blocked (balance) or the deadline passes on it: the path
    must begin at the layout in force."""
    back: list[WalkStep] = []
    while not deadline.search_passed():
        off = np.flatnonzero(search.gpu != search.init)
        if not off.size:
            break
        best: tuple[float, float, int, int, int] | None = None
        for a, b in _ranked_pairs(search, off, search.init):
            v = search.swap_value(a, b)
            if v is None:
                continue
            gain, moves = v  # moves < 0: a returns home (and b may too)
            key = -gain / max(-moves, 0.5)  # the loss per move freed
            if best is None or key < best[0] - EPS:
                best = (key, gain, moves, a, b)
        if best is None:
            return []
        _, gain, moves, a, b = best
        search.apply(a, b)
        back.append(WalkStep(a, b, -gain, -moves))  # the same swap, the other way
    if (search.gpu != search.init).any():
        return []
    return back[::-1]


def hull_segments(steps: Sequence[Step]) -> list[Segment]:
    """Step 3: the walk's prefixes on the upper concave hull of (moves, gain), as segments in
    walk order (best gain per move first: a hull's slopes decrease)."""
    moves = np.concatenate([[0], np.cumsum([s.moves for s in steps])])
    gain = np.concatenate([[0.0], np.cumsum([s.gain for s in steps])])
    out: list[Segment] = []
    i, n = 0, len(steps)
    while i < n:
        later = np.arange(i + 1, n + 1)
        dm, dg = moves[later] - moves[i], gain[later] - gain[i]
        free = later[(dm <= 0) & (dg > EPS)]
        if free.size:  # gain without spending a move: take the best such prefix
            j = int(free[np.argmax(gain[free])])
        else:
            ok = dm > 0
            if not ok.any():
                break
            rate = np.where(ok, dg / np.where(ok, dm, 1), -np.inf)
            j = int(later[np.flatnonzero(rate == rate.max())[-1]])
            if rate.max() <= EPS:
                break
        out.append(Segment(float(gain[j] - gain[i]), int(moves[j] - moves[i]), j))
        i = j
    return out


def _rate(s: Step) -> float:
    return s.gain / max(s.moves, 0.5)  # moves freed or none: before any that spends one


def merge_by_rate(seqs: Sequence[Sequence[Step]], max_moves: int) -> list[int]:
    """Steps taken per layer: the next step of the layer with the best gain per move while it
    fits; a layer whose next step does not fit stops there (its later steps build on it)."""
    taken = [0] * len(seqs)
    left = max_moves
    heap = [(-_rate(s[0]), li) for li, s in enumerate(seqs) if s]
    heapq.heapify(heap)
    while heap:
        _, li = heapq.heappop(heap)
        nxt = seqs[li][taken[li]]
        if nxt.moves > left:
            continue
        left -= nxt.moves
        taken[li] += 1
        if taken[li] < len(seqs[li]):
            heapq.heappush(heap, (-_rate(seqs[li][taken[li]]), li))
    return taken
