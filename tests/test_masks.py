"""Mask policies: exact sparsity, degree floor, biregularity, argument errors."""

import numpy as np
import pytest

from keras_expander.expansion import spectral
from keras_expander.pruning import masks


@pytest.mark.parametrize("policy", masks.MASK_POLICIES)
@pytest.mark.parametrize("shape,gates", [((28, 512), 4), ((128, 512), 4), ((28, 128), 1), ((128, 128), 1)])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95])
def test_policy_reaches_target_sparsity(policy, shape, gates, sparsity):
    weights = np.random.default_rng(0).normal(size=shape)
    mask = masks.compute_mask(weights, sparsity, policy, num_gates=gates)
    assert mask.shape == shape and mask.dtype == bool
    assert abs((1 - mask.mean()) - sparsity) <= 0.005


def test_magnitude_keeps_the_largest_weights():
    weights = np.arange(20, dtype=float).reshape(4, 5) - 10
    mask = masks.magnitude_mask(weights, 0.5)
    assert np.abs(weights[mask]).min() >= np.abs(weights[~mask]).max()
    assert mask.sum() == 10


@pytest.mark.parametrize("shape,sparsity", [((128, 128), 0.99), ((28, 128), 0.9), ((128, 128), 0.95)])
def test_degree_floor_leaves_no_isolated_node(shape, sparsity):
    weights = np.random.default_rng(1).normal(size=shape)
    plain = masks.magnitude_mask(weights, sparsity)
    floored = masks.degree_floor_mask(weights, sparsity, min_degree=1)
    assert floored.sum() == plain.sum()
    assert floored.sum(axis=1).min() >= 1 and floored.sum(axis=0).min() >= 1


def test_degree_floor_two():
    weights = np.random.default_rng(2).normal(size=(64, 64))
    mask = masks.degree_floor_mask(weights, 0.9, min_degree=2)
    assert mask.sum(axis=1).min() >= 2 and mask.sum(axis=0).min() >= 2


def test_degree_floor_keeps_budget_when_floor_is_infeasible():
    weights = np.random.default_rng(3).normal(size=(28, 128))
    mask = masks.degree_floor_mask(weights, 0.99, min_degree=1)  # 36 edges cannot cover 128 hidden units
    assert mask.sum() == masks.kept_edges(28 * 128, 0.99)


def test_degree_floor_prefers_large_weights():
    weights = np.random.default_rng(4).normal(size=(64, 64))
    mask = masks.degree_floor_mask(weights, 0.5)
    assert np.array_equal(mask, masks.magnitude_mask(weights, 0.5))  # floor already met by magnitude


@pytest.mark.parametrize("shape,sparsity", [((128, 128), 0.9), ((28, 128), 0.8), ((96, 128), 0.5), ((7, 9), 0.3)])
def test_random_biregular_degrees_differ_by_at_most_one(shape, sparsity):
    mask = masks.random_biregular_mask(shape, sparsity, seed=5)
    rows, cols = mask.sum(axis=1), mask.sum(axis=0)
    assert rows.max() - rows.min() <= 1 and cols.max() - cols.min() <= 1
    assert mask.sum() == masks.kept_edges(shape[0] * shape[1], sparsity)


def test_random_biregular_is_seeded():
    first = masks.random_biregular_mask((32, 64), 0.9, seed=1)
    assert np.array_equal(first, masks.random_biregular_mask((32, 64), 0.9, seed=1))
    assert not np.array_equal(first, masks.random_biregular_mask((32, 64), 0.9, seed=2))


def test_lstm_policies_act_per_gate():
    weights = np.random.default_rng(6).normal(size=(16, 64))
    # gate i dominates: magnitude takes its edges, per-gate policies do not
    weights[:, :16] = 100 + np.abs(weights[:, :16])
    per_gate = masks.compute_mask(weights, 0.75, "degree_floor_magnitude", num_gates=4)
    for block in np.split(per_gate, 4, axis=1):
        assert block.sum() == 64
    assert masks.compute_mask(weights, 0.75, "magnitude", num_gates=4)[:, :16].all()


def test_per_gate_magnitude_is_the_magnitude_mask_of_each_gate_without_a_floor():
    weights = np.random.default_rng(7).normal(size=(16, 64))
    weights[:, :16] = 100 + np.abs(weights[:, :16])
    weights[3, 16:] = 1e-6  # input 3 is the weakest in gates f, c, o: without a floor it is cut off there
    mask = masks.compute_mask(weights, 0.75, "per_gate_magnitude", num_gates=4)
    for block, gate_weights in zip(np.split(mask, 4, axis=1), np.split(weights, 4, axis=1)):
        assert block.sum() == 64
        assert np.array_equal(block, masks.magnitude_mask(gate_weights, 0.75))
    assert not mask[3, 16:].any()
    assert masks.compute_mask(weights, 0.75, "degree_floor_magnitude", num_gates=4)[3, 16:32].any()


@pytest.mark.parametrize("kwargs,match", [
    (dict(sparsity=1.0, policy="magnitude"), "sparsity=1.0"),
    (dict(sparsity=-0.1, policy="magnitude"), "sparsity=-0.1"),
    (dict(sparsity=0.5, policy="top_k"), "policy='top_k'"),
    (dict(sparsity=0.5, policy="degree_floor_magnitude", min_degree=0), "min_degree=0"),
    (dict(sparsity=0.5, policy="degree_floor_magnitude", min_degree=9), "min_degree=9"),
])
def test_bad_arguments_name_the_argument_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        masks.compute_mask(np.ones((8, 8)), **kwargs)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.75, 1.0])
def test_blend_keeps_edge_count_and_the_largest_share_of_edges(share):
    weights = np.random.default_rng(2).normal(size=(32, 64))
    mask = masks.degree_floor_mask(weights, 0.8)
    blended = masks.blend_with_random(mask, weights, share, seed=1)
    assert blended.sum() == mask.sum()
    ranked = np.argsort(-np.abs(weights[mask]), kind="stable")
    top = np.flatnonzero(mask.ravel())[ranked[: round(share * mask.sum())]]
    assert blended.ravel()[top].all()  # the largest share of the candidate's edges survives
    if share == 1.0:
        assert np.array_equal(blended, mask)
    assert blended.any(axis=0).all() and blended.any(axis=1).all()  # the degree floor's promise survives


@pytest.mark.parametrize("shape,sparsity", [((28, 128), 0.9), ((128, 128), 0.97), ((28, 128), 0.96)])
def test_blend_reconnects_every_node_it_cut_off(shape, sparsity):
    weights = np.random.default_rng(4).normal(size=shape)
    mask = masks.degree_floor_mask(weights, sparsity)
    assert mask.any(axis=0).all() and mask.any(axis=1).all()
    for seed in range(5):
        blended = masks.blend_with_random(mask, weights, 0.25, seed=seed)
        assert blended.sum() == mask.sum()
        assert blended.any(axis=0).all() and blended.any(axis=1).all()


def test_blend_with_random_breaks_the_block_structure_of_rank_one_weights():
    # |w| = a_i b_j makes magnitude masks pair large rows with large columns; random edges lower mu_1.
    rng = np.random.default_rng(0)
    weights = np.outer(rng.lognormal(0, 1, 16), rng.lognormal(0, 1, 32))
    mask = masks.degree_floor_mask(weights, 0.5)
    before = spectral.spectral_metrics(mask).delta_r
    after = spectral.spectral_metrics(masks.blend_with_random(mask, weights, 0.75, seed=3)).delta_r
    assert after >= before + 0.5


def test_blend_refuses_bad_share_and_shape_mismatch():
    with pytest.raises(ValueError, match="kept_share=1.5"):
        masks.blend_with_random(np.ones((2, 2), bool), np.ones((2, 2)), 1.5)
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(2, 3\)"):
        masks.blend_with_random(np.ones((2, 2), bool), np.ones((2, 3)), 0.5)


@pytest.mark.parametrize("shape,sparsity", [((28, 128), 0.9), ((128, 128), 0.95), ((5, 7), 0.5), ((3, 9), 0.99)])
def test_right_regular_gives_every_output_unit_the_same_input_count(shape, sparsity):
    weights = np.random.default_rng(3).normal(size=shape)
    mask = masks.right_regular_mask(weights, sparsity)
    degrees = mask.sum(axis=0)
    assert mask.sum() == masks.kept_edges(weights.size, sparsity)
    assert degrees.max() - degrees.min() <= 1


def test_right_regular_keeps_each_columns_largest_weights():
    weights = np.array([[1.0, -9.0, 0.1], [5.0, 2.0, -0.2], [-3.0, 0.5, 7.0]])
    mask = masks.right_regular_mask(weights, 2 / 3)  # 3 edges: one per column
    np.testing.assert_array_equal(mask, [[False, True, False], [True, False, False], [False, False, True]])
