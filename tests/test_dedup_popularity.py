"""``dedup --flatten-popularity``: fitted tokens weighted so every expert counts as if equally
popular; the weights, their effect on the solve, and refusal by the strategies that ignore it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import SolverOptions, check_layout, solve_placement
from placement.dedup.evaluate import dedup_cost
from placement.dedup.popularity import flattened_weights
from tests.test_dedup_fallbacks import _grouped_instance
from tests.test_placement_dedup import _problem
from traces.infra.errors import InputError


def test_hand_computed_weights():
    # Tokens {0,1}, {0,1}, {2,3} over 4 experts: routes per expert 2, 2, 1, 1, plus one each:
    # f = 3, 3, 2, 2, mean 2.5; f_mean / f = 5/6, 5/6, 5/4, 5/4.  Token weights (mean over its
    # experts) 5/6, 5/6, 5/4, mean 35/36; scaled to mean 1: 6/7, 6/7, 9/7.
    x = np.array([[0, 1], [0, 1], [2, 3]])
    np.testing.assert_allclose(flattened_weights(x, 4, 1.0), [6 / 7, 6 / 7, 9 / 7])
    np.testing.assert_array_equal(flattened_weights(x, 4, 0.0), np.ones(3))
    # strength 1/2: sqrt(5/6) and sqrt(5/4) before scaling, so the rare token gets
    # sqrt(5/4) / sqrt(5/6) = sqrt(3/2) times the weight of a common one.
    w = flattened_weights(x, 4, 0.5)
    assert w[2] / w[0] == pytest.approx(np.sqrt(1.5))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0, 1))
def test_weights_have_mean_one_and_favour_rare_experts(seed, strength):
    rng = np.random.default_rng(seed)
    E, k = 12, 3
    pop = rng.dirichlet(np.full(E, 0.5))
    x = np.array([rng.choice(E, k, replace=False, p=pop) for _ in range(40)])
    w = flattened_weights(x, E, strength)
    assert (w > 0).all() and w.mean() == pytest.approx(1.0)
    f = np.bincount(x.ravel(), minlength=E) + 1.0
    # a token all of whose experts are at least as rare as every expert of another token
    # weighs at least as much
    lo, hi = f[x].max(axis=1), f[x].min(axis=1)  # each token's commonest and rarest expert
    for a in range(len(x)):
        assert (w[hi >= lo[a]] <= w[a] + 1e-12).all()


def test_equal_popularity_leaves_the_layout_unchanged():
    # Every expert used equally often: every weight is 1, so the flattened fit is the plain one.
    rng = np.random.default_rng(3)
    E, T = 8, 64
    rows = [np.roll(np.arange(E), -(t % E))[:2] for t in range(T)]  # each expert 16 times
    experts = np.array(rows)[:, None, :]
    origins = rng.integers(0, 2, T)
    p = _problem(experts, origins, gpus_per_server=2, servers=2)
    np.testing.assert_array_equal(flattened_weights(experts[:, 0], E, 1.0), np.ones(T))
    plain = solve_placement(p, "dedup", SolverOptions(seed=0))
    flat = solve_placement(p, "dedup", SolverOptions(seed=0, flatten_popularity=1.0))
    np.testing.assert_array_equal(plain.layout.expert_gpus, flat.layout.expert_gpus)


@pytest.mark.parametrize("redundant", [0, 6])
def test_flattened_fit_reports_the_exact_unweighted_sample_cost(redundant):
    experts, origins = _grouped_instance(4)
    p = _problem(experts, origins, gpus_per_server=2, servers=3, groups=6, redundant=redundant)
    res = solve_placement(p, "dedup", SolverOptions(seed=0, flatten_popularity=1.0))
    assert res.is_ok and check_layout(p, res.layout) == []
    exact = dedup_cost(p, res.layout)
    assert res.info["flatten_popularity"] == 1.0
    assert res.info["copies_per_token_layer"] == exact.copies_per_token_layer
    assert res.info["dedup_cost_per_token"] == exact.cost_per_token
    assert res.info["lower_bound"] <= exact.cost_per_token + 1e-9


@pytest.mark.parametrize("strategy", ["eplb", "round-robin", "ilp-load"])
def test_strategies_that_ignore_it_refuse_it(strategy):
    experts, origins = _grouped_instance(0)
    p = _problem(experts, origins, gpus_per_server=2, servers=3, groups=6)
    with pytest.raises(InputError, match="does not use --flatten-popularity"):
        solve_placement(p, strategy, SolverOptions(flatten_popularity=0.5))
