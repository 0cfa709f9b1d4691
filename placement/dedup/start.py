"""Starting layouts for the search: routing groups packed by co-selection, or co-activation.

DeepSeek-V3/R1 route every token to ``top_k`` experts inside its best ``topk_group`` of
``expert_groups`` groups, so a server that holds whole groups which are often chosen together
receives few tokens it cannot serve alone (what EPLB's hierarchical mode exploits, with groups
packed by load instead).  With more servers than groups, each group is split over a block of
servers; where neither divides the other (DeepSeek's EP144: 8 groups on 18 servers), the groups
are chained by co-selection and their experts fill the servers in that order, so a group spans
few consecutive servers and its neighbours are the groups chosen with it.  Without groups,
servers are filled greedily with experts that are often chosen together.  Clusters go to the
servers whose origins use them most.
"""

from __future__ import annotations

import numpy as np


def _assign_to_servers(weight_by_server: np.ndarray) -> np.ndarray:
    """Cluster -> server, greedily by the largest (cluster, server) usage; a permutation."""
    n = weight_by_server.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    free = np.ones(weight_by_server.shape[1], dtype=bool)
    for flat in np.argsort(-weight_by_server, axis=None, kind="stable"):
        c, s = divmod(int(flat), weight_by_server.shape[1])
        if out[c] < 0 and free[s]:
            out[c] = s
            free[s] = False
    return out


def group_clusters(sel: np.ndarray, per_cluster: int) -> list[list[int]]:
    """Groups into clusters of ``per_cluster``, greedily by co-selection (``sel`` [T, groups])."""
    q = sel.T.astype(np.float64) @ sel.astype(np.float64)
    freq = np.diag(q).copy()
    left = set(range(sel.shape[1]))
    out: list[list[int]] = []
    while left:
        seed = max(left, key=lambda g: (freq[g], -g))
        cl = [seed]
        left.remove(seed)
        while len(cl) < per_cluster and left:
            nxt = max(left, key=lambda g: (q[g, cl].sum(), -g))
            cl.append(nxt)
            left.remove(nxt)
        out.append(cl)
    return out


def group_start(
    experts: np.ndarray, own: np.ndarray, num_experts: int, groups: int, caps: np.ndarray
) -> np.ndarray | None:
    """Server per expert from the routing groups (``caps`` primaries per server, summing to the
    experts), or None without groups."""
    S = len(caps)
    size = num_experts // groups
    if groups < 2 or num_experts % groups or int(caps.sum()) != num_experts:
        return None
    T = experts.shape[0]
    sel = np.zeros((T, groups), dtype=bool)
    sel[np.repeat(np.arange(T), experts.shape[1]), (experts // size).ravel()] = True
    srv = np.empty(num_experts, dtype=np.int64)
    even = bool((caps == num_experts // S).all()) and num_experts % S == 0
    if even and groups % S == 0:
        clusters = group_clusters(sel, groups // S)
        use = np.zeros((len(clusters), S))
        for c, members in enumerate(clusters):
            use[c] = np.bincount(own, weights=sel[:, members].sum(axis=1), minlength=S)
        server_of = _assign_to_servers(use)
        for c, members in enumerate(clusters):
            for g in members:
                srv[g * size:(g + 1) * size] = server_of[c]
        return srv
    if even and S % groups == 0:
        per = S // groups
        block = size // per
        for g in range(groups):
            srv[g * size:(g + 1) * size] = g * per + np.arange(size) // block
        return srv
    chain = group_clusters(sel, groups)[0]  # each next group the most co-selected so far
    order = np.concatenate([np.arange(g * size, (g + 1) * size) for g in chain])
    srv[order] = np.repeat(np.arange(S), caps)
    return srv


def coactivation_start(
    experts: np.ndarray, own: np.ndarray, num_experts: int, caps: np.ndarray
) -> np.ndarray:
    """Fill servers one by one: the busiest expert left, then the expert most often chosen
    together with those already there; each filled server goes to the origins using it most."""
    T, k = experts.shape
    occ = np.zeros((T, num_experts), dtype=np.float32)
    occ[np.repeat(np.arange(T), k), experts.ravel()] = 1.0
    co = occ.T @ occ
    freq = np.diag(co).astype(np.float64).copy()
    np.fill_diagonal(co, 0.0)
    left = np.ones(num_experts, dtype=bool)
    clusters: list[np.ndarray] = []
    for cap in caps.tolist():
        members: list[int] = []
        score = np.zeros(num_experts)
        for _ in range(int(cap)):
            if not left.any():
                break
            if not members:
                e = int(np.argmax(np.where(left, freq, -np.inf)))
            else:
                e = int(np.argmax(np.where(left, score + 1e-9 * freq, -np.inf)))
            members.append(e)
            left[e] = False
            score += co[e]
        clusters.append(np.array(members, dtype=np.int64))
    S = len(caps)
    use = np.zeros((S, S))
    for c, cl in enumerate(clusters):
        use[c] = np.bincount(own, weights=occ[:, cl].sum(axis=1), minlength=S)
    # clusters were cut to the servers' capacities in server order: keep sizes matched
    srv = np.empty(num_experts, dtype=np.int64)
    if (caps == caps[0]).all():
        server_of = _assign_to_servers(use)
    else:
        server_of = np.arange(S)
    for c, cl in enumerate(clusters):
        srv[cl] = server_of[c]
    return srv
