"""Dragonfly builders: groups of fully connected routers joined by global links.

* ``dragonfly``: groups of ``a`` fully connected routers, ``p`` servers and ``h`` global links
  per router, groups joined by the "absolute" global wiring.
* ``dragonfly-sparse``: the same with a fraction of its global links removed (the rule in
  :mod:`simulator.cluster.builders`).

Link bandwidths and link defaults are those of :mod:`simulator.cluster.builders`.
"""

from __future__ import annotations

from simulator.cluster.builders import FabricBuilder, LinkDefaults, check_sparsity, thin_links
from simulator.cluster.topology import ClusterSpec
from traces.infra.errors import InputError


def _dragonfly(
    family: str, a: int, p: int, h: int, num_groups: int | None, d: LinkDefaults
) -> tuple[FabricBuilder, int]:
    for name, value in (("routers_per_group", a), ("servers_per_router", p)):
        if value < 1:
            raise InputError(f"{family}: {name} must be >= 1, got {value}")
    if h < 0:
        raise InputError(f"{family}: global_links_per_router must be >= 0, got {h}")
    most = a * h + 1
    if num_groups is None:
        num_groups = most
    if not 1 <= num_groups <= most:
        raise InputError(
            f"{family}: with {a} routers of {h} global links a dragonfly has 1..{most} groups,"
            f" asked for {num_groups}"
        )
    fab = FabricBuilder(d)
    for grp in range(num_groups):
        for r in range(a):
            router = fab.switch(f"g{grp}.r{r}", "router", grp)
            for _ in range(p):
                fab.link(fab.server(grp), router, d.server_uplink_bytes_per_s, "access")
        for r in range(a):
            for q in range(r + 1, a):
                fab.link(f"g{grp}.r{r}", f"g{grp}.r{q}", d.bundle_bytes_per_s, "local")
    if num_groups > 1:
        # Absolute arrangement: group i's global ports are numbered 0..a*h-1 (router = port
        # // h); the m-th link between groups i < j uses port m*(g-1) + (j-1) of group i and
        # port m*(g-1) + i of group j, for m < floor(a*h / (g-1)).  With g = a*h+1 each pair
        # of groups is joined by exactly one link.
        per_pair = (a * h) // (num_groups - 1)
        for i in range(num_groups):
            for j in range(i + 1, num_groups):
                for m in range(per_pair):
                    ri = (m * (num_groups - 1) + j - 1) // h
                    rj = (m * (num_groups - 1) + i) // h
                    fab.link(f"g{i}.r{ri}", f"g{j}.r{rj}", d.bundle_bytes_per_s, "global")
    return fab, num_groups


def _dragonfly_checks(family: str, h: int, num_groups: int | None) -> None:
    if (num_groups is None or num_groups > 1) and h == 0:
        raise InputError(f"{family}: more than one group needs global_links_per_router >= 1")


def build_dragonfly(
    routers_per_group: int = 4,
    servers_per_router: int = 2,
    global_links_per_router: int = 2,
    num_groups: int | None = None,
    defaults: LinkDefaults | None = None,
) -> ClusterSpec:
    """Dragonfly: groups of ``a`` fully connected routers, ``p`` servers and ``h`` global
    links per router.

    The defaults are the canonical balanced arrangement a = 2p = 2h with the most groups,
    g = a*h + 1, so that every two groups share exactly one global link.  Global wiring is the
    "absolute" arrangement (router ``r`` of a group owns global ports r*h .. r*h+h-1; the link
    between groups i < j goes from port j-1 of group i to port i of group j).  With fewer groups
    each pair of groups gets floor(a*h / (g-1)) global links (m-th link: port m*(g-1)+j-1 of
    group i to port m*(g-1)+i of group j); ports left over stay unused.  Servers are numbered
    group by group, router by router.

    Examples
    --------
    >>> c = build_dragonfly()  # a=4, p=2, h=2: 9 groups of 8 servers
    >>> c.num_servers, sum(lk.tier == "global" for lk in c.links)
    (72, 36)
    """
    d = defaults or LinkDefaults()
    a, p, h = routers_per_group, servers_per_router, global_links_per_router
    _dragonfly_checks("dragonfly", h, num_groups)
    fab, g = _dragonfly("dragonfly", a, p, h, num_groups, d)
    return fab.cluster(
        f"dragonfly-a{a}-p{p}-h{h}-g{g}",
        f"dragonfly of {g} groups x {a} routers x {p} servers of {d.gpus_per_server} GPUs,"
        f" {h} global links per router",
    )


def build_dragonfly_sparse(
    routers_per_group: int = 4,
    servers_per_router: int = 2,
    global_links_per_router: int = 2,
    num_groups: int | None = None,
    sparsity: float = 0.5,
    seed: int = 0,
    defaults: LinkDefaults | None = None,
) -> ClusterSpec:
    """A dragonfly with ``sparsity`` of its global links removed (deterministic order keyed by
    ``seed``, never disconnecting; module docstring): some group pairs lose their direct link
    and route through a third group.
    """
    d = defaults or LinkDefaults()
    a, p, h = routers_per_group, servers_per_router, global_links_per_router
    check_sparsity("dragonfly-sparse", sparsity)
    _dragonfly_checks("dragonfly-sparse", h, num_groups)
    fab, g = _dragonfly("dragonfly-sparse", a, p, h, num_groups, d)
    removed, total = thin_links(fab, {"global"}, sparsity, seed)
    return fab.cluster(
        f"dragonfly-sparse-a{a}-p{p}-h{h}-g{g}-{sparsity:g}",
        f"dragonfly of {g} groups x {a} routers x {p} servers of {d.gpus_per_server} GPUs,"
        f" {removed} of {total} global links removed (sparsity {sparsity:g}, seed {seed})",
    )
