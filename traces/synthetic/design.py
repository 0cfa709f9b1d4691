"""Sampling tables of the synthetic generator and the vectorised draw of expert sets.

A token at layer l picks a routing mode ``c`` (``modes.py``; one mode = no co-activation
model), then its expert groups ``S`` (``topk_groups`` of ``num_expert_groups``) from a
distribution over group subsets, then ``top_k`` distinct experts inside ``S`` by systematic
sampling with inclusion probabilities ``q_i = top_k * act[c, i] / load_c(S)``.  The subset
distribution is fitted per (layer, mode) by iterative scaling so that the marginals equal the
mode's activation exactly; the modes mix to the layer's activation exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb

import numpy as np

from traces.infra.errors import InputError
from traces.model import ModelSpec
from traces.synthetic.modes import exact_mixture, shrink_to_cap
from traces.trace import expert_dtype

_MAX_GROUP_SUBSETS = 5000
_Q_MAX = 0.98  # largest conditional inclusion probability a group subset may need
MODE_CAP = 0.97  # modes are shrunk toward the layer's activation to stay below this
_UNIT_BITS = 26  # a unit of inclusion probability is 2^26 integer steps
_CELL_BITS = 5  # the inverse lookup has 2^5 cells per unit
_ORDERS = 16  # random expert orders per (layer, group subset) for systematic sampling
_ROW_BUDGET = 1120  # (modes x subsets x orders) rows per layer before orders are reduced
_MIN_ORDERS = 4
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


@dataclass(frozen=True, slots=True, eq=False)
class Design:
    """Sampling tables of one tenant (one drift phase) for all MoE layers.

    A row is (group subset S, expert order o) of one mode; it lists the M experts of S in order o
    with integer cumulative inclusion probabilities ``cum`` (k units of 2^26 in total).
    """

    mode_thresh: np.ndarray  # [layers, K] alias acceptance thresholds (x 2^32)
    mode_alias: np.ndarray  # [layers, K]
    subset_thresh: np.ndarray  # [layers, K, C]
    subset_alias: np.ndarray  # [layers, K, C]
    packed: np.ndarray  # [layers, K * C * O * M]: cum[pos + 1] << 16 | expert id at pos
    start: np.ndarray  # [layers, K * C * O * k * 2^cell_bits] first candidate position per cell
    sigma: np.ndarray  # [layers, experts] layer l-1 expert -> layer l expert (row 0 unused)
    layer_corr: np.ndarray  # [layers] effective layer correlation (0 for layer 0)
    mode_shrink: np.ndarray  # [layers] blend of the modes toward the layer activation (0 = none)
    width: int  # M, experts per group subset
    orders: int  # O

    @property
    def num_modes(self) -> int:
        return int(self.mode_thresh.shape[1])


def _alias_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias tables for every row of ``w`` [rows, n] (rows with positive sums)."""
    rows, n = w.shape
    x = w / w.sum(axis=1, keepdims=True) * n
    prob = np.ones((rows, n))
    alias = np.tile(np.arange(n), (rows, 1))
    done = np.zeros((rows, n), dtype=bool)
    r = np.arange(rows)
    for _ in range(n - 1):
        s = np.argmin(np.where(done, np.inf, x), axis=1)
        g = np.argmax(np.where(done, -np.inf, x), axis=1)
        xs = x[r, s]
        prob[r, s] = np.clip(xs, 0.0, 1.0)
        alias[r, s] = g
        x[r, g] -= 1.0 - xs
        done[r, s] = True
    return prob, alias


def _subsets(m: ModelSpec) -> np.ndarray:
    g, gk = m.num_expert_groups, m.topk_groups
    if comb(g, gk) > _MAX_GROUP_SUBSETS:
        raise InputError(
            f"model {m.name!r}: {comb(g, gk)} expert-group subsets is too many to tabulate"
        )
    return np.array(list(itertools.combinations(range(g), gk)), dtype=np.intp)


def _fit_subsets(
    pi: np.ndarray, m: ModelSpec, subsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """P(S) per row of ``pi`` so that sum_{S contains g} P(S) k / load(S) = 1 for used groups.

    Returns (P [rows, C], ok [rows]); ``ok`` is False where no such distribution exists
    with every conditional inclusion probability below ``_Q_MAX``.
    """
    layers, e = pi.shape
    g, k = m.num_expert_groups, m.top_k
    member = np.zeros((len(subsets), g))
    member[np.arange(len(subsets))[:, None], subsets] = 1.0
    grouped = pi.reshape(layers, g, e // g)
    load_g = grouped.sum(axis=2)
    load_s = load_g @ member.T  # [layers, C]
    top = np.einsum("lg,cg->lcg", grouped.max(axis=2), member).max(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        qmax = np.where(load_s > 0, k * top / load_s, np.inf)
    allowed = qmax < _Q_MAX
    used = load_g > 0
    p = allowed / np.maximum(allowed.sum(axis=1, keepdims=True), 1)
    coef = np.where(load_s > 0, k / np.where(load_s > 0, load_s, 1), 0.0)  # [layers, C]
    err = np.full(layers, np.inf)
    checked = err.copy()
    for it in range(20_000):
        cur = (p * coef) @ member  # [layers, G]
        logr = np.where(used, np.log(np.maximum(cur, 1e-30)), 0.0)
        err = np.abs(np.where(used, cur - 1.0, 0.0)).max(axis=1)
        if err.max() < 1e-12:
            break
        if it % 500 == 499:  # stalled layers (no feasible distribution) stop the loop
            if np.all((err < 1e-12) | (err > 0.99 * checked)):
                break
            checked = err.copy()
        p = p * np.exp(np.clip(-0.5 * logr @ member.T, -30.0, 30.0))
        total = p.sum(axis=1, keepdims=True)
        p /= np.where(total > 0, total, 1.0)
    return p, allowed.any(axis=1) & (err < 1e-7)


def _rank_bijection(prev: np.ndarray, cur: np.ndarray, m: ModelSpec) -> np.ndarray:
    """sigma[i]: expert of the current layer taking expert i of the previous layer.

    Groups are matched by load rank, then experts inside matched groups by activation rank.
    """
    g = m.num_expert_groups
    per = m.num_routed_experts // g
    gp = np.argsort(-prev.reshape(g, per).sum(1), kind="stable")
    gc = np.argsort(-cur.reshape(g, per).sum(1), kind="stable")
    sigma = np.empty(m.num_routed_experts, dtype=np.intp)
    for a, b in zip(gp, gc, strict=True):
        ep = a * per + np.argsort(-prev[a * per : (a + 1) * per], kind="stable")
        ec = b * per + np.argsort(-cur[b * per : (b + 1) * per], kind="stable")
        sigma[ep] = ec
    return sigma


def _fresh_modes(
    weights: np.ndarray, act: np.ndarray, pi: np.ndarray, fresh: np.ndarray, shrink: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Modes whose mixture is ``fresh`` (the draws beside layer copies), exactly: every mode is
    blended toward ``pi`` by ``shrink``, then tilted to mix to ``fresh``."""
    a = (1 - shrink)[:, None, None] * act + shrink[:, None, None] * pi[:, None, :]
    return exact_mixture(weights, a, fresh)


def build_design(
    pi: np.ndarray,
    modes: tuple[np.ndarray, np.ndarray] | None,
    m: ModelSpec,
    layer_corr: float,
    where: str,
    seed: list[int],
) -> Design:
    """Tables for activation ``pi`` [layers, E] and optional modes (weights, activation)."""
    layers, e = pi.shape
    k = m.top_k
    grouped_routing = m.num_expert_groups > 1 and m.topk_groups < m.num_expert_groups
    gm = m if grouped_routing else ModelSpec(m.name, (0,), e, 0, k, 1)  # one group of all
    subsets = _subsets(gm)
    per = e // gm.num_expert_groups
    members = (subsets[:, :, None] * per + np.arange(per)[None, None, :]).reshape(len(subsets), -1)
    weights, act = modes if modes is not None else (np.ones((layers, 1)), pi[:, None, :])
    n_modes = weights.shape[1]

    sigma = np.tile(np.arange(e), (layers, 1))
    shifted = np.zeros_like(pi)  # pi_{l-1} carried to layer l's experts by sigma
    for li in range(1, layers):
        sigma[li] = _rank_bijection(pi[li - 1], pi[li], gm)
        shifted[li, sigma[li]] = pi[li - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(shifted > 0, pi / np.where(shifted > 0, shifted, 1), np.inf).min(axis=1)
    rho = np.minimum(layer_corr, 0.98 * bound)
    rho[0] = 0.0
    shrink = shrink_to_cap(act, pi, MODE_CAP) if n_modes > 1 else np.zeros(layers)
    for attempt in range(12):
        fresh = (pi - rho[:, None] * shifted) / (1.0 - rho[:, None])
        fresh = np.clip(fresh, 0.0, None)
        fresh *= k / fresh.sum(axis=1, keepdims=True)
        w, mact = _fresh_modes(weights, act, pi, fresh, shrink)
        p_sub, ok_rows = _fit_subsets(mact.reshape(layers * n_modes, e), gm, subsets)
        ok = np.asarray((ok_rows.reshape(layers, n_modes) | (w <= 0)).all(axis=1))
        if ok.all():
            break
        bad_rho = ~ok & (rho > 0)
        bad_mode = ~ok & ~bad_rho & (shrink < 1) & (n_modes > 1)
        if not (bad_rho.any() or bad_mode.any()) or attempt == 11:
            li = int(np.flatnonzero(~ok)[0])
            raise InputError(
                f"{where}: MoE layer {m.moe_layer_indices[li]}: the expert load is too"
                f" concentrated for {'group-limited ' if grouped_routing else ''}routing of"
                f" {k} distinct experts (an expert or group takes too large a share); use a"
                " smaller zipf exponent or max_activation"
            )
        rho[bad_rho] = np.where(attempt >= 5, 0.0, rho[bad_rho] / 2)
        shrink[bad_mode] = np.where(attempt >= 9, 1.0, 1 - (1 - shrink[bad_mode]) / 2)

    orders = _ORDERS
    while orders > _MIN_ORDERS and n_modes * len(subsets) * orders > _ROW_BUDGET:
        orders //= 2
    mp, ma = _alias_rows(np.maximum(w, 0.0))
    sp, sa = _alias_rows(np.where(p_sub > 0, p_sub, 0.0))
    packed, start = _systematic_tables(mact.reshape(layers * n_modes, e), members, k, seed, orders)
    return Design(
        mode_thresh=_thresholds(mp),
        mode_alias=ma,
        subset_thresh=_thresholds(sp).reshape(layers, n_modes, -1),
        subset_alias=sa.reshape(layers, n_modes, -1),
        packed=packed.reshape(layers, -1),
        start=start.reshape(layers, -1),
        sigma=sigma.astype(expert_dtype(e)),
        layer_corr=rho,
        mode_shrink=shrink,
        width=members.shape[1],
        orders=orders,
    )


def _thresholds(prob: np.ndarray) -> np.ndarray:
    """Alias acceptance probabilities as 32-bit integer thresholds (uint64, 2^32 = always)."""
    return np.round(np.clip(prob, 0.0, 1.0) * 2.0**32).astype(np.uint64)


def _systematic_tables(
    fresh: np.ndarray, members: np.ndarray, k: int, seed: list[int], orders: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per table (layer, mode): (end of interval, expert) per position and inverse lookup.

    Row (S, o) holds the experts of subset S in the o-th random order; expert i of S spans
    ``q_i = k * pi_i / load(S)`` units of the cumulative axis [0, k).
    """
    tables = fresh.shape[0]
    c, mm = members.shape
    unit = 1 << _UNIT_BITS
    shift = _UNIT_BITS - _CELL_BITS
    cells = k << _CELL_BITS
    rows = c * orders
    rng = np.random.default_rng(np.random.SeedSequence([*seed, 4]))
    out_packed = np.empty((tables, rows * mm), dtype=np.int64)
    out_start = np.empty((tables, rows * cells), dtype=np.uint8 if mm <= 256 else np.int32)
    for ti in range(tables):
        q = fresh[ti][members]  # [C, M]
        load = q.sum(axis=1, keepdims=True)
        q = k * q / np.where(load > 0, load, 1.0)
        q[load[:, 0] <= 0] = k / mm  # subsets never drawn (P(S) = 0)
        q = np.clip(q, 0.0, _Q_MAX)  # binds only where P(S) = 0
        order = np.argsort(rng.random((c, orders, mm)), axis=2)
        qo = np.take_along_axis(np.broadcast_to(q[:, None, :], order.shape), order, axis=2)
        cum = np.zeros((c, orders, mm + 1), dtype=np.int64)
        cumf = np.cumsum(qo, axis=2)
        cum[:, :, 1:] = np.round(cumf / cumf[:, :, -1:] * (k * unit)).astype(np.int64)
        cum[:, :, -1] = k * unit
        ids = np.take_along_axis(np.broadcast_to(members[:, None, :], order.shape), order, axis=2)
        # start[row, cell] = number of inner boundaries cum[j] (1 <= j < M) <= the cell's left
        # edge, i.e. the position whose interval holds that edge
        key = ((cum[:, :, 1:mm] + (1 << shift) - 1) >> shift).reshape(rows, mm - 1)
        flat = (np.arange(rows)[:, None] * cells + np.minimum(key, cells)).ravel()
        flat = flat[key.ravel() < cells]
        counts = np.bincount(flat, minlength=rows * cells).reshape(rows, cells)
        out_start[ti] = np.cumsum(counts, axis=1).ravel()
        out_packed[ti] = ((cum[:, :, 1:] << 16) | ids).ravel()
    return out_packed, out_start


def _alias_pick(r: np.ndarray, thresh: np.ndarray, alias: np.ndarray, n_cols: int) -> np.ndarray:
    col = (((r >> _SHIFT32) * np.uint64(n_cols)) >> _SHIFT32).astype(np.intp)
    return np.where((r & _LOW32) < thresh[col], col, alias[col])


def draw(d: Design, li: int, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n fresh expert sets at layer li: a mode, a group subset, then systematic sampling.

    Systematic sampling takes the experts under the points u, u+1, ..., u+k-1 of the
    cumulative inclusion axis of a randomly ordered row: exactly k distinct experts (every
    interval is shorter than 1), each with its inclusion probability, no rejection.
    """
    mm, orders = d.width, d.orders
    cells = k << _CELL_BITS
    n_modes, c = d.subset_thresh.shape[1:]
    raw = rng.bit_generator.random_raw
    if n_modes > 1:
        mode = _alias_pick(raw(n), d.mode_thresh[li], d.mode_alias[li], n_modes)
        r1 = raw(n)
        col = (((r1 >> _SHIFT32) * np.uint64(c)) >> _SHIFT32).astype(np.intp)
        cell = mode * c + col
        thresh = d.subset_thresh[li].ravel()[cell]
        subset = np.where((r1 & _LOW32) < thresh, col, d.subset_alias[li].ravel()[cell])
        subset = subset + mode * c  # row block of the mode
    else:
        subset = _alias_pick(raw(n), d.subset_thresh[li, 0], d.subset_alias[li, 0], c)
    r2 = raw(n)
    row = (subset * orders + ((r2 >> _SHIFT32) % np.uint64(orders)).astype(np.intp))[:, None]
    u = (r2 & np.uint64((1 << _UNIT_BITS) - 1)).astype(np.int64)[:, None]
    x = u + (np.arange(k, dtype=np.int64) << _UNIT_BITS)[None, :]  # [n, k] points
    flat = row * mm + d.start[li][row * cells + (x >> (_UNIT_BITS - _CELL_BITS))]
    packed = d.packed[li]
    val = packed[flat]
    todo = np.flatnonzero(x >= (val >> 16))
    if todo.size:  # step over the few boundaries inside a lookup cell
        flat, val, x = flat.ravel(), val.ravel(), x.ravel()
        while todo.size:
            flat[todo] += 1
            val[todo] = packed[flat[todo]]
            todo = todo[x[todo] >= (val[todo] >> 16)]
        val = val.reshape(n, k)
    return (val & 0xFFFF).astype(d.sigma.dtype)
