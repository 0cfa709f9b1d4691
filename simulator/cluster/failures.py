"""What-ifs on a cluster: failed links, switches and servers, degraded links.

An *element* is named ``KIND:NAME``: ``link:A~B`` (the link between nodes A and B, either
order), ``switch:NAME`` or ``server:NAME``.  :func:`apply_whatif` returns a new cluster:

* a failed link is removed;
* a failed switch is removed with its links;
* a failed server is removed with its GPUs and links: its GPUs *disappear* (they are not
  kept as "failed" GPUs), so every strategy and the simulator see a smaller, healthy cluster.
  The surviving nodes keep their names and their order, so a layout maps onto the new cluster
  by GPU name (:func:`gpu_index_map`); its lost experts are re-placed or repaired
  (:mod:`placement.repair`);
* a degraded link keeps ``factor`` of its bandwidth (0 < factor <= 1);
* a switch left with no links, or joined to no GPU any more, carries nothing and is removed
  too (reported in the notes).

A failure that cuts GPUs off from the rest is refused, naming the GPUs.  On a fabric whose
GPUs have their own NICs, a GPU whose NIC link fails sends through the NIC of the next GPU of
its server (PXN over NVLink; :mod:`simulator.cluster.topology`).

Everything here is pure: no files, no simpy.  The command is ``moe-netsim topology whatif``,
the study keys ``topology.fail`` / ``topology.degrade`` (:data:`WHATIF_KEYS`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from simulator.cluster.topology import ClusterSpec, LinkSpec, NodeSpec
from traces.infra.errors import InputError
from traces.infra.options import check_options, option

ELEMENT_KINDS = ("link", "switch", "server")
LINK_SEPARATOR = "~"
# The [topology] keys of a study (and the flags of `topology whatif`): element lists.
WHATIF_KEYS = ("fail", "degrade")
_SHOWN = 8  # names listed in a message before "... and N more"

if TYPE_CHECKING:  # numpy is imported where it is used: the CLI's parsers import this module
    import numpy as np


def link_name(link: LinkSpec) -> str:
    """The name of a link: its two ends joined by ``~`` in file order (either order is
    accepted on input)."""
    return f"{link.a}{LINK_SEPARATOR}{link.b}"


@dataclass(frozen=True)
class Element:
    kind: str
    name: str

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Degradation:
    """A link that keeps ``factor`` of its bandwidth."""

    link: str
    factor: float = option(0.5, "Share of the link's bandwidth that remains.", "", 0, 1,
                           low_open=True)

    def __post_init__(self) -> None:
        check_options(self, f"--degrade link:{self.link}")


@dataclass(frozen=True)
class WhatIf:
    """Failed elements and degraded links; the empty what-if changes nothing."""

    fail: tuple[Element, ...] = ()
    degrade: tuple[Degradation, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.fail and not self.degrade

    @property
    def text(self) -> str:
        parts = [f"fail {e.text}" for e in self.fail]
        parts += [f"degrade link:{d.link}={d.factor:g}" for d in self.degrade]
        return ", ".join(parts) or "no change"


@dataclass(frozen=True, eq=False)
class WhatIfResult:
    cluster: ClusterSpec
    whatif: WhatIf
    removed_gpus: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def parse_element(text: str, where: str = "--fail") -> Element:
    """``link:A~B``, ``switch:NAME`` or ``server:NAME`` (names are checked later)."""
    if not isinstance(text, str):
        raise InputError(f"{where}: expected a string KIND:NAME, got {text!r}")
    kind, sep, name = text.partition(":")
    if not sep or kind not in ELEMENT_KINDS or not name:
        raise InputError(
            f"{where} {text!r}: expected KIND:NAME with KIND one of {', '.join(ELEMENT_KINDS)}"
            f" (e.g. link:A{LINK_SEPARATOR}B, switch:spine0, server:s3)"
        )
    if kind == "link" and name.count(LINK_SEPARATOR) != 1:
        raise InputError(
            f"{where} {text!r}: a link is named by its two ends, link:A{LINK_SEPARATOR}B"
        )
    return Element(kind, name)


def parse_degradation(text: str, where: str = "--degrade") -> Degradation:
    """``link:A~B=FACTOR`` with 0 < FACTOR <= 1."""
    if not isinstance(text, str):
        raise InputError(f"{where}: expected a string link:A~B=FACTOR, got {text!r}")
    head, sep, value = text.rpartition("=")
    if not sep:
        raise InputError(f"{where} {text!r}: expected link:A{LINK_SEPARATOR}B=FACTOR")
    element = parse_element(head, where)
    if element.kind != "link":
        raise InputError(f"{where} {text!r}: only links degrade (link:A{LINK_SEPARATOR}B=FACTOR)")
    try:
        factor = float(value)
    except ValueError:
        raise InputError(f"{where} {text!r}: FACTOR must be a number, got {value!r}") from None
    try:
        return Degradation(element.name, factor)
    except InputError as exc:
        raise InputError(f"{where} {text!r}: {str(exc).split(': ', 1)[1]}") from None


def parse_whatif(fail: Sequence[str] = (), degrade: Sequence[str] = (),
                 where_fail: str = "--fail", where_degrade: str = "--degrade") -> WhatIf:
    """The what-if of the command-line flags or study keys (lists of strings)."""
    for values, where in ((fail, where_fail), (degrade, where_degrade)):
        if not isinstance(values, list | tuple):
            raise InputError(f"{where}: expected a list of strings, got {values!r}")
    return WhatIf(tuple(parse_element(t, where_fail) for t in fail),
                  tuple(parse_degradation(t, where_degrade) for t in degrade))


def _shown(names: Sequence[str]) -> str:
    head = ", ".join(names[:_SHOWN])
    return head + (f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _near(name: str, candidates: Iterable[str]) -> str:
    near = difflib.get_close_matches(name, list(candidates), n=4, cutoff=0.5)
    return f"; near matches: {', '.join(near)}" if near else ""


class _Names:
    """The cluster's elements by name, for look-ups with messages naming near matches."""

    def __init__(self, cluster: ClusterSpec, where: str) -> None:
        self.cluster = cluster
        self.where = where
        self.kind = {n.name: n.kind for n in cluster.nodes}
        self.links: dict[tuple[str, str], int] = {}
        for i, lk in enumerate(cluster.links):
            self.links[(lk.a, lk.b)] = self.links[(lk.b, lk.a)] = i

    def node(self, element: Element) -> str:
        got = self.kind.get(element.name)
        if got == element.kind:
            return element.name
        if got is not None:
            raise InputError(
                f"{self.where}: {element.text}: {element.name!r} is a {got}, not a"
                f" {element.kind}" + (f"; use {got}:{element.name}" if got != "gpu" else
                                      " (fail its server, or the link to it)")
            )
        same = [n for n, k in self.kind.items() if k == element.kind]
        raise InputError(
            f"{self.where}: {element.text}: cluster {self.cluster.name!r} has no {element.kind}"
            f" named {element.name!r}" + _near(element.name, same)
        )

    def link(self, name: str, flag: str) -> int:
        a, _, b = name.partition(LINK_SEPARATOR)
        if (a, b) in self.links:
            return self.links[(a, b)]
        unknown = [x for x in (a, b) if x not in self.kind]
        known = [x for x in (a, b) if x in self.kind]
        # near matches among the links of an end that exists, else among all links
        gpus = set(self.cluster.gpus) - set(known)  # a GPU's own link only if it is named
        names = [link_name(lk) for lk in self.cluster.links
                 if (not known or known[0] in (lk.a, lk.b)) and not {lk.a, lk.b} & gpus]
        why = (f"no node named {unknown[0]!r}" if unknown else f"no link joins {a!r} and {b!r}")
        near = _near(name, names)
        if not near and known:
            near = f"; links of {known[0]!r}: {_shown(names)}"
        raise InputError(
            f"{self.where}: {flag}:{name}: cluster {self.cluster.name!r} has {why}{near}"
        )


def _unreachable_gpus(cluster: ClusterSpec, nodes: set[str], links: Sequence[LinkSpec]
                      ) -> list[str]:
    """GPUs outside the largest group of GPUs joined by links (breadth-first search)."""
    nbrs: dict[str, list[str]] = {n: [] for n in nodes}
    for lk in links:
        nbrs[lk.a].append(lk.b)
        nbrs[lk.b].append(lk.a)
    gpus = [n.name for n in cluster.nodes if n.kind == "gpu" and n.name in nodes]
    component: dict[str, int] = {}
    sizes: list[int] = []
    for start in gpus:
        if start in component:
            continue
        label = len(sizes)
        component[start] = label
        frontier, count = [start], 0
        while frontier:
            u = frontier.pop()
            count += 1
            for v in nbrs[u]:
                if v not in component:
                    component[v] = label
                    frontier.append(v)
        sizes.append(sum(1 for g in gpus if component.get(g) == label))
    if len(sizes) <= 1:
        return []
    main = max(range(len(sizes)), key=sizes.__getitem__)  # ties: the group of the first GPU
    return [g for g in gpus if component[g] != main]


def apply_whatif(cluster: ClusterSpec, whatif: WhatIf, where: str = "what-if") -> WhatIfResult:
    """The cluster after the what-if's failures and degradations (module docstring)."""
    if whatif.is_empty:
        return WhatIfResult(cluster, whatif)
    names = _Names(cluster, where)
    seen: dict[str, str] = {}

    def once(key: str, text: str) -> None:
        if key in seen:
            raise InputError(f"{where}: {text} is named twice ({seen[key]} and {text})")
        seen[key] = text

    failed_nodes: set[str] = set()
    failed_links: set[int] = set()
    for e in whatif.fail:
        if e.kind == "link":
            i = names.link(e.name, "link")
            once(f"link {i}", e.text)
            failed_links.add(i)
        else:
            once(e.name, e.text)
            failed_nodes.add(names.node(e))
    degraded: dict[int, float] = {}
    for d in whatif.degrade:
        i = names.link(d.link, "link")
        if i in failed_links:
            raise InputError(f"{where}: link:{d.link} is both failed and degraded; give one")
        once(f"link {i}", f"link:{d.link}={d.factor:g}")
        degraded[i] = d.factor
    gone = set(failed_nodes)
    removed_gpus = tuple(n.name for n in cluster.nodes
                         if n.kind == "gpu" and n.server in failed_nodes)
    gone.update(removed_gpus)
    for i, lk in enumerate(cluster.links):
        ends = {lk.a, lk.b} & failed_nodes
        if ends and (i in failed_links or i in degraded):
            what = "failed" if i in failed_links else "degraded"
            raise InputError(
                f"{where}: link:{link_name(lk)} is {what} but also goes with the failed"
                f" {cluster.graph.nodes[sorted(ends)[0]]['kind']} {sorted(ends)[0]!r}; drop one"
            )
    if len(removed_gpus) == cluster.num_gpus:
        raise InputError(f"{where}: {whatif.text} leaves cluster {cluster.name!r} no GPUs")
    links = [
        replace(lk, bandwidth_bytes_per_s=lk.bandwidth_bytes_per_s * degraded[i])
        if i in degraded else lk
        for i, lk in enumerate(cluster.links)
        if i not in failed_links and not ({lk.a, lk.b} & gone)
    ]
    degree: dict[str, int] = {n.name: 0 for n in cluster.nodes if n.name not in gone}
    for lk in links:
        degree[lk.a] += 1
        degree[lk.b] += 1
    idle = sorted(n.name for n in cluster.nodes
                  if n.kind == "switch" and n.name not in gone and degree[n.name] == 0)
    gone.update(idle)
    kept = {n.name for n in cluster.nodes if n.name not in gone}
    cut = _unreachable_gpus(cluster, kept, links)
    islands = [] if cut else _switches_without_gpus(cluster, kept, links)
    if islands:  # switches joined to each other but to no GPU any more: they carry nothing
        gone.update(islands)
        kept -= set(islands)
        links = [lk for lk in links if lk.a in kept and lk.b in kept]
    if cut:
        raise InputError(
            f"{where}: {whatif.text} disconnects {len(cut)} GPU(s) of cluster"
            f" {cluster.name!r} from the rest: {_shown(cut)}"
        )
    servers_without_nic = _servers_losing_all_nics(cluster, links, kept)
    if servers_without_nic:  # unreachable already, unless a server has another way out
        raise InputError(
            f"{where}: {whatif.text} leaves server(s) {_shown(servers_without_nic)} without any"
            " NIC of their own GPUs on a per-GPU-NIC fabric"
        )
    nodes: tuple[NodeSpec, ...] = tuple(n for n in cluster.nodes if n.name in kept)
    notes = tuple(f"switch {s} has no links left and is removed too" for s in idle) + tuple(
        f"switch {s} is cut off from every GPU and is removed too" for s in islands)
    out = ClusterSpec(
        name=f"{cluster.name}-whatif",
        nodes=nodes,
        links=tuple(links),
        description=f"{cluster.description}; what-if: {whatif.text}".lstrip("; "),
    )
    return WhatIfResult(out, whatif, removed_gpus, notes)


def _switches_without_gpus(cluster: ClusterSpec, nodes: set[str], links: Sequence[LinkSpec]
                           ) -> list[str]:
    """Switches in no group of nodes that holds a GPU (breadth-first search from the GPUs)."""
    nbrs: dict[str, list[str]] = {n: [] for n in nodes}
    for lk in links:
        nbrs[lk.a].append(lk.b)
        nbrs[lk.b].append(lk.a)
    seen = {n.name for n in cluster.nodes if n.kind == "gpu" and n.name in nodes}
    frontier = list(seen)
    while frontier:
        for v in nbrs[frontier.pop()]:
            if v not in seen:
                seen.add(v)
                frontier.append(v)
    return sorted(n.name for n in cluster.nodes
                  if n.kind == "switch" and n.name in nodes and n.name not in seen)


def _servers_losing_all_nics(cluster: ClusterSpec, links: Sequence[LinkSpec],
                             kept: set[str]) -> list[str]:
    """Servers with per-GPU NICs before and none left after (the fallback needs one)."""
    before = {lk.nic_gpu for lk in cluster.links if lk.nic_gpu}
    if not before:
        return []
    server_of = {n.name: n.server for n in cluster.nodes if n.kind == "gpu"}
    have = {server_of[lk.nic_gpu] for lk in links if lk.nic_gpu}
    return [s for s in cluster.servers if s in kept and s not in have]


def gpu_index_map(healthy: ClusterSpec, failed: ClusterSpec) -> np.ndarray:
    """New index of every GPU of ``healthy`` in ``failed`` by name, -1 where it is gone."""
    import numpy as np

    new = {g: i for i, g in enumerate(failed.gpus)}
    extra = sorted(set(new) - set(healthy.gpus))
    if extra:
        raise InputError(
            f"cluster {failed.name!r} has GPUs that cluster {healthy.name!r} lacks"
            f" ({_shown(extra)}); it is not a what-if of it"
        )
    return np.array([new.get(g, -1) for g in healthy.gpus], dtype=np.int64)


def single_failures(cluster: ClusterSpec, kind: str) -> list[Element]:
    """Every single failure of one class: the network links (not a GPU's link to its own
    server, which always cuts that GPU off), every switch, or every server."""
    if kind not in ELEMENT_KINDS:
        raise InputError(f"failure class {kind!r}: choose one of {', '.join(ELEMENT_KINDS)}")
    if kind == "link":
        gpus = set(cluster.gpus)
        return [Element("link", link_name(lk)) for lk in cluster.links
                if lk.a not in gpus and lk.b not in gpus]
    return [Element(kind, n.name) for n in cluster.nodes if n.kind == kind]
