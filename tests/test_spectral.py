"""Spectral metrics against closed forms, solver agreement, and Cheeger bounds against brute force."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_expander.expansion import spectral

TOL = 1e-9


@pytest.mark.parametrize("m,n", [(1, 1), (1, 5), (3, 5), (28, 128), (128, 128)])
def test_complete_bipartite_has_mu0_sqrt_mn_and_mu1_zero(m, n):
    metrics = spectral.spectral_metrics(np.ones((m, n)))
    assert abs(metrics.mu0 - math.sqrt(m * n)) <= 1e-9 * math.sqrt(m * n)
    assert abs(metrics.mu1) <= 1e-6
    assert abs(metrics.ramanujan_bound - (math.sqrt(n - 1) + math.sqrt(m - 1))) <= TOL
    assert abs(metrics.delta_r - metrics.ramanujan_bound) <= 1e-6
    assert metrics.num_edges == m * n and metrics.isolated_left == 0 and metrics.isolated_right == 0


def test_disjoint_union_of_two_complete_graphs_has_zero_gap():
    d = 4
    block = np.ones((d, d))
    union = np.block([[block, np.zeros((d, d))], [np.zeros((d, d)), block]])
    metrics = spectral.spectral_metrics(union)
    assert abs(metrics.mu0 - d) <= TOL and abs(metrics.mu1 - d) <= 1e-9
    assert abs(metrics.spectral_gap) <= 1e-9
    assert abs(metrics.laplacian_lambda2) <= 1e-9  # disconnected
    assert abs(metrics.cheeger_lower) <= 1e-9


@pytest.mark.parametrize("n,d", [(8, 3), (16, 5), (64, 7)])
def test_regular_graph_from_permutations_has_mu0_equal_degree(n, d):
    rng = np.random.default_rng(n + d)
    biadjacency = np.zeros((n, n))
    while biadjacency.sum() < n * d:  # union of d disjoint permutation matrices: d-regular
        permutation = rng.permutation(n)
        if not biadjacency[np.arange(n), permutation].any():
            biadjacency[np.arange(n), permutation] = 1
    metrics = spectral.spectral_metrics(biadjacency)
    assert abs(metrics.mu0 - d) <= 1e-9
    assert metrics.min_left_degree == metrics.max_left_degree == d
    assert abs(metrics.delta_s - (2 * math.sqrt(d - 1) - metrics.mu1)) <= 1e-9
    assert abs(metrics.ramanujan_bound - 2 * math.sqrt(d - 1)) <= 1e-9


def test_single_edge():
    biadjacency = np.zeros((3, 4))
    biadjacency[1, 2] = 1
    metrics = spectral.spectral_metrics(biadjacency)
    assert metrics.mu0 == 1.0 and metrics.mu1 == 0.0
    assert metrics.isolated_left == 2 and metrics.isolated_right == 3
    assert metrics.laplacian_lambda2 == 2.0  # spectrum of K_{1,1}: {0, 2}
    assert metrics.delta_s == 0.0 and metrics.undefined_reason == ""


def test_empty_graph_is_nan_with_reason_not_an_exception():
    metrics = spectral.spectral_metrics(np.zeros((5, 7)))
    assert metrics.num_edges == 0 and metrics.isolated_left == 5 and metrics.isolated_right == 7
    assert math.isnan(metrics.delta_r) and math.isnan(metrics.delta_s)
    assert "empty" in metrics.undefined_reason


def test_equal_weights_give_the_unweighted_numbers():
    mask = np.random.default_rng(0).random((28, 128)) < 0.2
    unweighted = spectral.spectral_metrics(mask.astype(float))
    weighted = spectral.spectral_metrics(0.037 * mask, weighted=True)
    for field in ("mu0", "mu1", "delta_r", "delta_s", "ramanujan_bound", "laplacian_lambda2"):
        assert abs(getattr(unweighted, field) - getattr(weighted, field)) <= 1e-9, field


def test_weighted_differs_from_unweighted_for_unequal_weights():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(32, 64)) * (rng.random((32, 64)) < 0.3)
    assert abs(spectral.spectral_metrics(weights, weighted=True).mu1
               - spectral.spectral_metrics(weights).mu1) > 1e-3


@pytest.mark.parametrize("shape", [(28, 128), (128, 512), (96, 512)])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.5])
def test_dense_and_sparse_paths_agree(shape, density):
    mask = (np.random.default_rng(sum(shape)).random(shape) < density).astype(float)
    dense = spectral.top_singular_values(mask, method="dense")
    sparse = spectral.top_singular_values(mask, method="sparse")
    assert abs(dense[0] - sparse[0]) <= 1e-6 and abs(dense[1] - sparse[1]) <= 1e-6


def test_mu_matches_numpy_svd():
    matrix = np.abs(np.random.default_rng(3).normal(size=(40, 90)))
    singular = np.linalg.svd(matrix, compute_uv=False)
    mu0, mu1 = spectral.top_singular_values(matrix)
    assert abs(mu0 - singular[0]) <= 1e-9 * singular[0] and abs(mu1 - singular[1]) <= 1e-8 * singular[0]


def test_nan_weights_raise_value_error_naming_the_graph():
    weights = np.ones((3, 3))
    weights[0, 0] = np.nan
    with pytest.raises(ValueError, match="lstm/kernel/i"):
        spectral.spectral_metrics(weights, name="lstm/kernel/i")


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method='lanczos'"):
        spectral.top_singular_values(np.ones((2, 2)), method="lanczos")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 1)))
def test_cheeger_bounds_hold_against_brute_force(biadjacency):
    metrics = spectral.spectral_metrics(biadjacency)
    if metrics.num_edges == 0:
        return
    expansion = spectral.edge_expansion_exact(biadjacency)
    conductance = spectral.conductance_exact(biadjacency)
    slack = 1e-9
    assert metrics.cheeger_lower - slack <= expansion <= metrics.cheeger_upper + slack
    assert metrics.conductance_lower - slack <= conductance <= metrics.conductance_upper + slack


def test_brute_force_on_complete_graph():
    # K_{2,2} (a 4-cycle): cutting it in half crosses 2 edges, |S| = 2 -> h = 1; conductance 2 / 4.
    assert spectral.edge_expansion_exact(np.ones((2, 2))) == 1.0
    assert spectral.conductance_exact(np.ones((2, 2))) == 0.5


@pytest.mark.parametrize("q,delta,expected", [
    ([100, 50, 20, 10], [4.0, 2.0, 1.0, -1.0], 15.0),
    ([100, 50, 20], [3.0, 2.0, 1.0], None),
    ([100, 50], [-1.0, -2.0], 100.0),
    ([100, 50, 20, 10], [2.0, float("nan"), 0.0, -1.0], 20.0),
])
def test_first_zero_crossing_interpolates(q, delta, expected):
    assert spectral.first_zero_crossing(q, delta) == expected


def test_first_zero_crossing_requires_decreasing_q():
    with pytest.raises(ValueError, match="strictly decreasing"):
        spectral.first_zero_crossing([10, 20], [1.0, -1.0])
