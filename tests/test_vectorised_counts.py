"""Vectorised counting helpers against their one-by-one references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_topology_cases import SMALL_CASES, build, case_id

from simulator.cluster.builders import LinkDefaults, build_fat_tree, build_rail_optimized
from simulator.cluster.multipath import MultipathRoutes
from simulator.cluster.paths import build_route_table
from simulator.flow_paths import csr_index
from simulator.traffic import remote_copies
from simulator.unique import distinct_keys, rank_lookup, sorted_unique

_CLUSTERS = [*SMALL_CASES, ("fat-tree", {"k": 4, "num_servers": 8})]


def _cluster(case):
    if case == "rail-5":
        return build_rail_optimized(5)
    if case == "fat-tree-2gpu":
        return build_fat_tree(4, 8, LinkDefaults(gpus_per_server=2))
    return build(case)


@pytest.mark.parametrize("case", [*_CLUSTERS, "rail-5", "fat-tree-2gpu"],
                         ids=lambda c: c if isinstance(c, str) else case_id(c))
@pytest.mark.parametrize(("mode", "flows"), [("hash", None), ("ecmp", 3)])
def test_hashed_walk_equals_the_routes_pair_by_pair(case, mode, flows):
    # reference: every pair's hops (MultipathRoutes.hops, the routes the DES replays),
    # share x copies added link by link
    cluster = _cluster(case)
    mp = MultipathRoutes(build_route_table(cluster), mode, flows)
    ep = mp.endpoints
    n = ep.count
    rng = np.random.default_rng(len(cluster.links))
    e, f = rng.integers(0, n, 300), rng.integers(0, n, 300)
    far = ep.endpoint_server[e] != ep.endpoint_server[f]
    pairs = np.unique((e * n + f)[far])
    # copies in whole units of the share denominator, as the counters pass them
    copies = rng.integers(1, 9, pairs.size) * float(mp.share_denominator)
    want = np.zeros(mp.num_directed_links)
    for p, c in zip(pairs.tolist(), copies.tolist(), strict=True):
        for ids, shares in mp.hops(*divmod(p, n)):
            np.add.at(want, ids, shares * c)
    got = mp.link_copies(pairs, copies)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 80), st.integers(0, 50), st.integers(1, 8), st.integers(0, 2**31))
def test_remote_copies_count_distinct_remote_servers(servers, tokens, k, seed):
    # brute force: per token, the set of host servers other than its origin's; 80 servers
    # covers the bit-mask count (< 64 servers) and the sorted count
    rng = np.random.default_rng(seed)
    gs = np.sort(np.r_[np.arange(servers), rng.integers(0, servers, servers)])
    o = rng.integers(0, gs.size, tokens)
    h = rng.integers(0, gs.size, (tokens, k))
    want = sum(len({int(gs[x]) for x in row} - {int(gs[oo])}) for oo, row in zip(o, h, strict=True))
    got = remote_copies(o, h, gs)
    assert got.dedup == want
    assert got.routes == int((gs[h] != gs[o][:, None]).sum())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), max_size=60))
def test_sorted_unique_is_np_unique(values):
    x = np.array(values, dtype=np.int64)
    np.testing.assert_array_equal(sorted_unique(x), np.unique(x))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.lists(st.integers(0, 299), max_size=80))
def test_distinct_keys_dense_or_sorted_is_np_unique(space, values):
    # both paths: a key space of up to 300 against 0..80 values (dense below 8 per value)
    x = np.array([v % space for v in values], dtype=np.int64)
    np.testing.assert_array_equal(distinct_keys(x, space), np.unique(x))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.lists(st.integers(0, 299), min_size=1, max_size=40),
       st.integers(0, 100))
def test_rank_lookup_table_or_search_is_the_rank(space, values, lookups):
    keys = np.unique(np.array([v % space for v in values], dtype=np.int64))
    ranks = np.arange(keys.size)[::-1].copy()
    find = rank_lookup(keys, ranks, space, lookups)
    np.testing.assert_array_equal(find(keys[::-1]), ranks[::-1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=12), st.data())
def test_csr_index_is_every_entry_of_the_rows_in_order(lengths, data):
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.array(data.draw(st.lists(st.integers(0, len(lengths) - 1), max_size=10)),
                    dtype=np.int64)
    want = [(i, j) for i, r in enumerate(rows) for j in range(off[r], off[r + 1])]
    pos, idx = csr_index(off, rows)
    assert list(zip(pos.tolist(), idx.tolist(), strict=True)) == want
