"""The words of the demo's report: what the numbers say and why they differ."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pandas as pd

from experiments.report import Section


def _change(reduction_pct: float, better: str, worse: str) -> str:
    """'2.2% fewer' for a reduction, '0.2% more' for an increase."""
    word = better if reduction_pct >= 0 else worse
    return f"{abs(reduction_pct):.1f}% {word}"


def replay_model_text(sim: dict[str, Any], dedup: bool) -> str:
    """What the run's replay modelled, from the configuration it recorded (``SimConfig``
    fields; a field a run directory lacks is the current default)."""
    from dataclasses import asdict

    from simulator.cluster.multipath_modes import MULTIPATH_MODES
    from simulator.config import SimConfig
    from traces.infra.limits import human_bytes

    default = asdict(SimConfig())
    traffic = {**default["traffic"], **sim.get("traffic", {})}
    cfg = {**default, **sim}
    d, c = traffic["dispatch_bytes_per_element"], traffic["combine_bytes_per_element"]
    if cfg["mode"] == "flow":
        messages = "messages are flows per (source, destination) GPU pair and phase, sharing"
        messages += " links at max-min fair rates"
    else:
        messages = ("messages are aggregated per (source, destination) GPU pair and phase and"
                    f" cut into {human_bytes(cfg['chunk_bytes'])} chunks")
    def per_element(n: float) -> str:
        return f"{n:g} byte{'' if n == 1 else 's'} per hidden element"

    replay = "DES" if cfg["mode"] == "des" else cfg["mode"]
    return (
        f"Dispatch sends {per_element(d)} from the token's origin GPU to the expert's GPU,"
        f" combine sends {per_element(c)} back,"
        + (" de-duplicated per remote server (this run);" if dedup else
           " one copy per route (no de-duplication);")
        + " shared experts are replicated on every GPU and cause no traffic. Links are full"
        f" duplex FIFO servers with bandwidth and latency; {messages}; multipath"
        f" {traffic['multipath']}: {MULTIPATH_MODES[traffic['multipath']]}. Per-link bytes of"
        f" the {replay} replay equal the independent analytic count exactly (checked in"
        " this run)."
    )


def demo_sections(
    meta: dict[str, Any], summary: pd.DataFrame, server_load: pd.DataFrame, table: pd.DataFrame,
    figures: list[tuple[str, str]],
) -> list[Section]:
    """The demo page: results in words, why they differ, figures, the model."""
    cfg = SimpleNamespace(**meta["config"])
    cluster = SimpleNamespace(description=meta.get("cluster", ""),
                              num_gpus=meta.get("num_gpus", 8 * cfg.num_servers))
    s = summary.set_index("strategy")
    rr = s.loc["round-robin"]
    dedup = getattr(cfg, "dispatch", None) == "deepep-normal" or bool(
        getattr(cfg, "server_dedup", False))  # run directories written before --dispatch
    costs = server_load[server_load["strategy"] == "round-robin"]["cost"]
    sections = [
        Section("Result", _result_lines(s), table=table),
        Section("Why the numbers differ", _why_lines(cfg, cluster, costs, dedup)),
        Section("Figures", figures=figures),
        Section(
            "Model",
            [
                replay_model_text(meta.get("sim_config", {}), dedup),
                f"Rounded reference: round-robin hops per token {rr['hops_per_token']:,.1f}.",
            ],
        ),
    ]
    return sections


def _result_lines(s: pd.DataFrame) -> list[str]:
    """One line per strategy against round-robin (``s``: the summary by strategy)."""
    lines = []
    for name in s.index:
        if name == "round-robin":
            continue
        row = s.loc[name]
        lines.append(
            f"<b>{name}</b>: {row['hops_per_token']:,.0f} hops per token"
            f" ({_change(row['hops_per_token_reduction_pct'], 'fewer', 'more')} than"
            f" round-robin, the paper's metric)"
            + (f", {row['remote_copies_per_token_layer']:.2f} remote copies per token per MoE"
               " layer de-duplicated"
               f" ({_change(row['remote_copies_per_token_layer_reduction_pct'], 'fewer', 'more')};"
               f" {row['remote_routes_per_token_layer']:.2f} routes without de-duplication)"
               if "remote_copies_per_token_layer_reduction_pct" in row else "")
            + f", {row['network_link_bytes'] / 1e9:,.1f} GB on network links"
            f" ({_change(row['network_link_bytes_reduction_pct'], 'less', 'more')}),"
            f" {row['network_bytes'] / 1e9:,.2f} GB leaving servers, p99 MoE latency"
            f" {row['latency_p99_ms']:.2f} ms"
            f" ({_change(row['latency_p99_ms_reduction_pct'], 'lower', 'higher')})."
        )
    return lines


def _why_lines(cfg: SimpleNamespace, cluster: SimpleNamespace, costs: pd.Series, dedup: bool
               ) -> list[str]:
    """Why the strategies differ, in words, from the demo's configuration."""
    why = [
        f"The cluster is a k={cfg.fat_tree_k} fat tree only partly populated:"
        f" {cluster.description}."
        " Servers in the full pod reach most other servers without crossing the core, servers in"
        " the small pod do not, so the expected round-trip distance c[s] from a token's origin"
        f" ranges from {costs.min():.2f} to {costs.max():.2f} hops across servers. This asymmetry"
        " is what lets a topology-aware placement win at all: on a fully populated fat tree every"
        " server would see the same distances, c[s] would be equal, and every layout would have"
        " the same expected hops (docs/howto/choose-strategy.md, \"What the numbers say\").",
        "Expert load is skewed (see the heatmap; the busiest expert of a layer carries about 7x"
        f" the mean, as in real DeepSeek-R1 statistics). {len(cfg.tenants)} workloads share the"
        " cluster, each"
        f" with its own expert popularity and served on its own block of"
        f" {cluster.num_gpus // len(cfg.tenants)} consecutive GPUs ({', '.join(cfg.tenants)}),"
        " so token origins are spread evenly over all GPUs but which experts a token wants"
        " depends on where it lives. Every"
        f" strategy fits on the first {cfg.fit_tokens} tokens; the replay uses the next"
        f" {cfg.replay_tokens}, so the gains are out-of-sample.",
        "The load-aware ILP (ilp-load, the paper's ILPLoad) puts the hottest experts of every"
        " layer on the servers with the smallest c[s]: the centre of the big pod.",
        "ilp-origin (this project's) measures activation per origin GPU and minimises the"
        " expected distance from each token's own GPU, so a workload's favourite experts move"
        " towards the GPUs that serve it: the second source of gains besides the fabric's"
        " asymmetry, origin-dependent expert use.",
        "This replay is de-duplicated (DeepEP's inter-node dispatch): a token crosses the"
        " network once per remote server that hosts any of its experts and fans out inside"
        " it, so what costs bytes is the number of remote servers per token, not the number"
        " of routes. EPLB packs DeepSeek's routing groups onto servers and so cuts those copies"
        " without knowing the topology; dedup (this project's) minimises the de-duplicated"
        " cost itself, fitted on the first tokens' co-activation and origins, and reports a"
        " lower bound and gap. The paper's hop count ranks the strategies differently: see the"
        " two columns side by side." if dedup else "",
        "The paper's uniform ILP treats every expert as equally likely. With one expert of each"
        " layer per GPU the caps are tight, every server holds the same number of experts, and"
        " with equal weights every such layout has the same objective: it can only tie"
        " round-robin, and any difference in the replay is chance.",
        "Per-link bytes and hops fall with ilp-load because hot traffic stays inside the big pod,"
        " but the bytes leaving servers barely change: a placement that ignores origins cannot"
        " change the chance that a route leaves its server. Latency depends on the most loaded"
        " links and GPUs: concentrating hot experts also concentrates load (see max link"
        " utilisation), which the latency rows show honestly; the compute-balance option of the"
        " ILP family (`moe-netsim place --balance-eps`) addresses that.",
    ]
    return [w for w in why if w]
