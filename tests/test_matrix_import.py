"""Clusters from measured rank-to-rank matrices, cross-checked with networkx."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.cli import main
from simulator.cluster.io import load_cluster
from simulator.cluster.matrix import (
    check_matrices,
    cluster_from_matrices,
    pair_weights,
    read_matrices,
    relayed_pairs,
)
from simulator.cluster.paths import build_route_table
from traces.infra.errors import InputError


@st.composite
def symmetric_costs(draw):
    n = draw(st.integers(2, 7))
    upper = draw(st.lists(st.integers(0, 9), min_size=n * (n - 1) // 2,
                          max_size=n * (n - 1) // 2))
    m = np.zeros((n, n))
    m[np.triu_indices(n, 1)] = upper
    return m + m.T


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symmetric_costs())
def test_distances_are_networkx_shortest_paths_of_the_matrix(cost):
    m = check_matrices({"rank_cost_matrix": cost.tolist()}, "test")
    c = cluster_from_matrices(m)
    rt = build_route_table(c)
    # independent: networkx Floyd-Warshall on the complete graph whose edge weights are the
    # matrix entries (not the cluster's graph)
    g = nx.Graph()
    n = len(cost)
    g.add_weighted_edges_from((i, j, cost[i, j]) for i in range(n) for j in range(i + 1, n))
    fw = nx.floyd_warshall_numpy(g, nodelist=range(n))
    assert np.allclose(rt.distance, fw)
    # GPU r is rank r, and the pairs reported as relayed are exactly those the matrix overstates
    assert c.gpus == tuple(f"rank{r}.g0" for r in range(n))
    relays = {(i, j) for i, j, _, _ in relayed_pairs(c, m)}
    assert relays == {(i, j) for i in range(n) for j in range(i + 1, n) if fw[i, j] < cost[i, j]}


def test_bandwidth_matrix_hand_computed():
    # ranks 0, 1 on machine 0 (200 GB/s between them), rank 2 alone (50 GB/s to each):
    # weight = fastest / rate: 0-1: 1, 0-2 and 1-2: 200/50 = 4; GPU links carry the sum of a
    # rank's rates: rank 0: 200 + 50 = 250 GB/s, rank 2: 100 GB/s
    bw = [[0, 2e11, 5e10], [2e11, 0, 5e10], [5e10, 5e10, 0]]
    m = check_matrices({"rank_bandwidth_bytes_per_s": bw, "rank_server": [0, 0, 1]}, "t")
    c = cluster_from_matrices(m)
    assert pair_weights(m).tolist() == [[0, 1, 4], [1, 0, 4], [4, 4, 0]]
    by = {(lk.a, lk.b): lk for lk in c.links}
    assert by[("rank0.g0", "rank0")].bandwidth_bytes_per_s == 2.5e11
    assert by[("rank2.g0", "rank2")].bandwidth_bytes_per_s == 1e11
    assert by[("rank0", "rank1")].tier == "intra" and by[("rank0", "rank2")].tier == "network"
    assert by[("rank1", "rank2")].bandwidth_bytes_per_s == 5e10
    assert build_route_table(c).distance[0, 2] == 4


def test_symmetrize_is_explicit():
    cost = [[0, 1], [3, 0]]
    with pytest.raises(InputError, match=r"not symmetric: \[0\]\[1\] = 1 but \[1\]\[0\] = 3"):
        check_matrices({"rank_cost_matrix": cost}, "t")
    for how, want in (("mean", 2), ("min", 1), ("max", 3)):
        m = check_matrices({"rank_cost_matrix": cost}, "t", symmetrize=how)
        assert m.cost is not None and m.cost[0, 1] == m.cost[1, 0] == want


def test_csv_and_cli_round_trip(tmp_path, capsys):
    (tmp_path / "bw.csv").write_text("0,4e10\n4e10,0\n")
    m = read_matrices(tmp_path / "bw.csv", kind="bandwidth")
    assert m.bandwidth_bytes_per_s is not None and m.bandwidth_bytes_per_s[0, 1] == 4e10
    spec = {"rank_cost_matrix": [[0, 1, 9], [1, 0, 1], [9, 1, 0]], "name": "lab"}
    (tmp_path / "m.json").write_text(json.dumps(spec))
    assert main(["topology", "import", "--matrix", str(tmp_path / "m.json"), "--out",
                 str(tmp_path / "c.json")]) == 0
    captured = capsys.readouterr()
    assert "1 of 3 rank pairs are nearer through another rank" in captured.err
    c = load_cluster(tmp_path / "c.json")
    assert c.name == "lab" and c.num_gpus == 3
    assert build_route_table(c).distance[0, 2] == 2  # relayed through rank 1
