"""The numbers placement sees of a routed cluster: placement never sees a graph or a route.

:func:`placement_arrays` gives the cluster's keyword arguments of
``placement.PlacementProblem``, so a test or a tool builds a placement problem from a cluster
without the experiment pipeline::

    PlacementProblem(**placement_arrays(routes), activation=p, slots_per_gpu=s,
                     max_per_gpu_per_layer=m)
"""

from __future__ import annotations

import numpy as np

from simulator.cluster.paths import RouteTable
from traces.infra.limits import check_memory


def placement_arrays(routes: RouteTable) -> dict[str, np.ndarray]:
    """GPU distances, the server of each GPU, and the wire data of the routed (ECMP) paths.

    ``distance`` [gpus, gpus] (weighted hops), ``gpu_server`` [gpus];
    ``pair_seconds_per_byte`` [gpus, gpus]: sum over the route's network links of
    1 / bandwidth; ``server_link_incidence`` [servers, servers, links] (1 when the route from
    server a to b uses directed link e) with ``link_bandwidth_bytes_per_s`` [links].  Network
    links only (GPU <-> server links are NVLink class and, like their hop weight 0, not
    charged); the links are the directed ones any server-to-server route uses.
    """
    cl = routes.cluster
    S = cl.num_servers
    bw = np.array([lk.bandwidth_bytes_per_s for lk in cl.links])
    used = np.unique(routes.middle_links)
    g = float(cl.num_gpus)
    check_memory(
        16.0 * g * g + float(S) * S * (used.size + 8),
        f"cluster {cl.name!r}: placement's arrays of {cl.num_gpus} GPUs (distance and wire"
        " time per GPU pair, route incidence per server pair)",
        "place on a smaller cluster; replay (simulate) needs none of them",
    )
    col = {int(d): j for j, d in enumerate(used)}
    inc = np.zeros((S, S, len(used)), dtype=np.uint8)
    spb_s = np.zeros((S, S))
    for a in range(S):
        for b in range(S):
            if a == b:
                continue
            m = routes.middle(a, b)
            inc[a, b, [col[int(d)] for d in m]] = 1
            spb_s[a, b] = float((1.0 / bw[m // 2]).sum())
    gs = cl.gpu_server
    return {
        "distance": routes.distance,
        "gpu_server": gs,
        "pair_seconds_per_byte": spb_s[np.ix_(gs, gs)],
        "server_link_incidence": inc,
        "link_bandwidth_bytes_per_s": bw[used // 2],
    }
