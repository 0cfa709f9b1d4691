"""The fast paths of what every replay shares (stream the trace, build each layer's traffic)
against plain references, value for value: the packed-word check of repeated expert ids, the
reader's layer-major layout, grouped sums by reduceat, same-server pair keys and the copy
counts taken from the dense pair counts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.dispatch import _group_sums
from simulator.traffic import pair_list, remote_copies, same_server_keys
from traces import SynthConfig, generate_trace, model_preset, read_trace, write_trace
from traces.io import concat_traces, iter_trace
from traces.trace import find_bad_route


def _first_repeat(e: np.ndarray) -> tuple[int, int] | None:
    """Reference: the first (token, layer) in row-major order whose ids repeat."""
    for t in range(e.shape[0]):
        for li in range(e.shape[1]):
            if len(set(e[t, li].tolist())) < e.shape[2]:
                return t, li
    return None


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.sampled_from([2, 3, 4, 8]),
       st.sampled_from([np.uint8, np.uint16, np.int32]),
       st.sampled_from(["tokens", "layers", "layers-cut", "tokens-cut"]), st.integers(0, 2**31))
def test_repeated_ids_packed_or_pairwise_are_the_first_repeat(tokens, layers, k, dtype,
                                                              layout, seed):
    # ids from few distinct values (repeats frequent) or many (rare); 0 and the top id of
    # the range included, so a zero lane or a high bit cannot hide or fake a repeat
    rng = np.random.default_rng(seed)
    top = int(rng.choice([k + 1, 2 * k, int(np.iinfo(dtype).max)]))
    ids = np.stack([np.stack([rng.choice(top + 1, k, replace=False) for _ in range(layers)])
                    for _ in range(tokens)]).astype(dtype)
    n_bad = int(rng.integers(0, 3))
    for _ in range(n_bad):  # repeat one id of a few (token, layer)s
        t, li = int(rng.integers(tokens)), int(rng.integers(layers))
        r, q = rng.choice(k, 2, replace=False)
        ids[t, li, r] = ids[t, li, q]
    # memory order token-major or layer-major (the reader's), whole or a token range of a
    # larger block (strided, as by_steps cuts it)
    pad = np.zeros((2, layers, k), dtype=dtype)
    whole = np.concatenate([pad, ids, pad]) if layout.endswith("-cut") else ids
    if layout.startswith("layers"):
        whole = np.ascontiguousarray(whole.transpose(1, 0, 2)).transpose(1, 0, 2)
    e = whole[2:2 + tokens] if layout.endswith("-cut") else whole
    want = _first_repeat(ids)
    got = find_bad_route(e, top + 1)
    if want is None:
        assert got is None
    else:
        assert got is not None and got[:2] == want
        assert "not distinct" in got[2]


def test_repeated_ids_hand_computed():
    # token 0 fine; token 1 layer 1 repeats 255 in lanes 0 and 7 (the pair only the
    # rotation by one lane meets across the word's ends); token 2 layer 0 repeats 0
    e = np.zeros((3, 2, 8), dtype=np.uint8)
    e[:, :] = np.arange(8, dtype=np.uint8)
    e[1, 1] = [255, 1, 2, 3, 4, 5, 6, 255]
    e[2, 0] = [0, 1, 2, 3, 0, 5, 6, 7]
    lm = np.ascontiguousarray(e.transpose(1, 0, 2)).transpose(1, 0, 2)
    for arr in (e, lm):
        t, li, what = find_bad_route(arr, 256)
        assert (t, li) == (1, 1)
        assert what == "the 8 routed expert ids are not distinct ([1, 2, 3, 4, 5, 6, 255, 255])"


def test_reader_lays_out_layers_contiguously_with_the_same_values(tmp_path):
    tr = generate_trace(SynthConfig(model_preset("deepseek-v2-lite"), num_tokens=2500, seed=5))
    p = write_trace(tmp_path / "t.parquet", tr, row_group_tokens=1000)
    blocks = list(iter_trace(p, 1000))
    for b in blocks:
        assert all(b.experts[:, li, :].flags.c_contiguous for li in range(b.experts.shape[1]))
    joined = concat_traces(blocks)
    assert joined.experts[:, 3, :].flags.c_contiguous
    np.testing.assert_array_equal(joined.experts, tr.experts)
    np.testing.assert_array_equal(read_trace(p).experts, tr.experts)
    # the writer reads the layer-major blocks back into the same file content
    p2 = write_trace(tmp_path / "t2.parquet", joined, row_group_tokens=1000)
    np.testing.assert_array_equal(read_trace(p2).experts, tr.experts)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 7), st.integers(1, 12), st.integers(1, 9), st.integers(0, 2), st.booleans(),
       st.integers(0, 2**31))
def test_group_sums_are_the_bincount_sums(n, rows, cols, axis_pick, shuffle, seed):
    # groups sorted or not, some empty (the bincount fallback); integer counts in float64
    rng = np.random.default_rng(seed)
    axis = axis_pick % 2
    size = cols if axis == 1 else rows
    group = rng.integers(0, n, size)
    if not shuffle:
        group = np.sort(group)
    x = rng.integers(0, 50, (rows, cols)).astype(np.float64)
    want = np.zeros((rows, n) if axis == 1 else (n, cols))
    for i in range(size):
        if axis == 1:
            want[:, group[i]] += x[:, i]
        else:
            want[group[i]] += x[i]
    got = _group_sums(x, group, n, axis)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=30))
def test_same_server_keys_are_the_same_server_pairs(servers):
    gs = np.unique(servers, return_inverse=True)[1].astype(np.int64)  # servers 0..S-1 used
    want = np.flatnonzero(gs[:, None] == gs[None, :])
    np.testing.assert_array_equal(same_server_keys(gs), want)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.integers(1, 8), st.integers(0, 2**31))
def test_remote_copies_from_the_dense_pair_counts_are_the_per_route_ones(servers, tokens, k,
                                                                         seed):
    # GPUs of a server not consecutive (shuffled), so the same-server keys are not blocks
    rng = np.random.default_rng(seed)
    gs = rng.permutation(np.r_[np.arange(servers), rng.integers(0, servers, servers)])
    o = rng.integers(0, gs.size, tokens)
    h = rng.integers(0, gs.size, (tokens, k))
    pairs = pair_list(o, h, gs.size)
    assert remote_copies(o, h, gs, pairs) == remote_copies(o, h, gs)
    assert remote_copies(o, h, gs).routes == int((gs[h] != gs[o][:, None]).sum())
