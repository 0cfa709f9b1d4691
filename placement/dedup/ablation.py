"""What each lever of the dedup strategy saved on its fitting sample (the result's ablation)."""

from __future__ import annotations

import dataclasses

import numpy as np

from placement.dedup.evaluate import DedupCost, dedup_cost
from placement.problem import ExpertLayout, PlacementProblem, SolverOptions
from placement.token_sample import TokenSample


def ablation(
    problem: PlacementProblem, layout: ExpertLayout, start_cost: float, search_cost: float,
    metric: str, exact: DedupCost, seed: int,
) -> dict[str, float]:
    """Cost per token on the fitting sample of each step, and what each lever saved.

    ``round_robin``: the paper's baseline; ``start``: the structured start (routing groups
    packed by co-selection; co-activation fill without groups); ``search``: after the swap
    search (co-activation beyond groups, and origins), one copy each; ``final``: with replicas.
    ``origins_shuffled``: the final layout with the tokens' origins permuted at random, so
    ``origins_shuffled - final`` is what placing experts near their tokens' origins bought.
    ``start_cost``, ``search_cost``: the sample's total cost after the start and the search.
    """
    from placement.baselines import round_robin

    assert problem.token_sample is not None
    T = problem.token_sample.num_tokens
    rr = round_robin(problem, SolverOptions())
    assert rr.layout is not None
    rng = np.random.default_rng(seed)
    sample = problem.token_sample
    shuffled = dataclasses.replace(
        problem, token_sample=TokenSample(sample.experts, rng.permutation(sample.origin_gpu))
    )
    out = {
        "round_robin": dedup_cost(problem, rr.layout, metric).cost_per_token,
        "start": start_cost / T,
        "search": search_cost / T,
        "final": exact.cost_per_token,
        "origins_shuffled": dedup_cost(shuffled, layout, metric).cost_per_token,
    }
    out["saved_by_groups_or_coactivation_start"] = out["round_robin"] - out["start"]
    out["saved_by_search"] = out["start"] - out["search"]
    out["saved_by_replicas"] = out["search"] - out["final"]
    out["saved_by_origins"] = out["origins_shuffled"] - out["final"]
    return out
