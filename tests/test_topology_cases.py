"""Small instances of every topology family, shared by the topology and path tests
(imported as a module by them; the one test here checks that every family is covered)."""

from __future__ import annotations

from simulator.cluster.families import BUILDERS
from simulator.cluster.topology import ClusterSpec

# (family, parameters): small enough to compare against networkx pair by pair
SMALL_CASES: list[tuple[str, dict]] = [
    ("fat-tree", {"k": 4, "num_servers": 6, "gpus_per_server": 2}),
    ("fat-tree", {"k": 4, "gpus_per_server": 1}),
    ("fat-tree-sparse", {"k": 4, "sparsity": 0.5, "gpus_per_server": 2}),
    ("fat-tree-sparse", {"k": 6, "num_servers": 20, "sparsity": 0.3, "seed": 3,
                         "gpus_per_server": 1}),
    ("fat-tree-thinned", {"k": 4, "sparsity": 0.5, "gpus_per_server": 2}),
    ("dragonfly", {"routers_per_group": 2, "servers_per_router": 1,
                   "global_links_per_router": 1, "gpus_per_server": 2}),
    ("dragonfly", {"num_groups": 4, "gpus_per_server": 1}),
    ("dragonfly", {"servers_per_router": 1, "gpus_per_server": 1}),
    ("dragonfly-sparse", {"servers_per_router": 1, "gpus_per_server": 1}),
    ("leaf-spine", {"num_servers": 7, "servers_per_leaf": 3, "num_spines": 3,
                    "oversubscription": 3.0, "gpus_per_server": 2}),
    ("rail-optimized", {"num_servers": 6, "servers_per_group": 4, "num_spines": 2,
                        "gpus_per_server": 4}),
    ("nvl72", {"num_racks": 3, "gpus_per_rack": 4, "gpus_per_tray": 2, "racks_per_group": 2,
               "num_spines": 2}),
    ("nvl72", {"num_racks": 2, "gpus_per_rack": 6, "gpus_per_tray": 2,
               "scale_out": "leaf-spine", "leaves_per_rack": 2, "num_spines": 1}),
]


def case_id(case: tuple[str, dict]) -> str:
    family, params = case
    return family + "-" + "-".join(f"{k}{v}" for k, v in params.items())


def build(case: tuple[str, dict]) -> ClusterSpec:
    family, params = case
    return BUILDERS[family](**params)


def test_every_family_has_a_small_case():
    assert {family for family, _ in SMALL_CASES} == set(BUILDERS)
