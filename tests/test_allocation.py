"""Sparsity allocation across a layer's graphs: budgets, closed forms, and the masks and wrappers that follow it."""

import math

import numpy as np
import pytest

from keras_expander.pruning import allocation, decision, masks

LSTM_128_OVER_28 = [(28, 128)] * 4 + [(128, 128)] * 4


@pytest.mark.parametrize("policy", allocation.ALLOCATIONS)
@pytest.mark.parametrize("shapes", [LSTM_128_OVER_28, [(7, 5)] * 3 + [(5, 5)] * 3, [(1, 1), (300, 13), (2, 40)]])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 0.95, 0.98, 0.999])
def test_every_allocation_keeps_the_uniform_budget_of_the_layer(policy, shapes, sparsity):
    kept = allocation.allocate(shapes, sparsity, policy)
    assert sum(kept) == sum(round((1 - sparsity) * m * n) for m, n in shapes)
    assert all(0 <= k <= m * n for k, (m, n) in zip(kept, shapes))


def test_erk_closed_forms():
    # densities eps (m + n) / (m n): rates 1 and 10 / 16; budget 2 + 8 = 10 = eps (4 + 10) -> 2.857, 7.143 -> 3, 7
    assert allocation.allocate([(2, 2), (2, 8)], 0.5, "erk") == [3, 7]
    # a 1 x 1 graph would get density 4.5: dense, and eps solved again over the other: 49 of the 10 x 10
    assert allocation.allocate([(1, 1), (10, 10)], 0.5, "erk") == [1, 49]


def test_ramanujan_gap_ratio_closed_forms():
    assert allocation.ramanujan_gap_ratio(50, 10, 10) == pytest.approx(1 - 2 * 2 / 5)  # 5-regular: 1 - 2 sqrt(4) / 5
    # (d_L, d_R) = (10, 2.5): 1 - (3 + sqrt(1.5)) / 5
    assert allocation.ramanujan_gap_ratio(100, 10, 40) == pytest.approx(1 - (3 + math.sqrt(1.5)) / 5)
    assert allocation.ramanujan_gap_ratio(5, 10, 10) == -math.inf  # degree below 1


def test_expansion_equalizes_the_ramanujan_gap_ratio_and_moves_edges_to_the_wide_input_graphs():
    kept = allocation.allocate(LSTM_128_OVER_28, 0.95, "expansion")
    gaps = [allocation.ramanujan_gap_ratio(k, m, n) for k, (m, n) in zip(kept, LSTM_128_OVER_28)]
    assert max(gaps) - min(gaps) < 0.005
    uniform = allocation.allocate(LSTM_128_OVER_28, 0.95)
    assert kept[0] > 1.9 * uniform[0] and kept[4] < uniform[4]  # 357 vs 179 input, 641 vs 819 recurrent edges
    # Identical graphs split evenly; where the floors (2 max(m, n) edges) are unaffordable, in proportion to them.
    assert allocation.allocate([(20, 20)] * 2, 0.8, "expansion") == [80, 80]
    assert allocation.allocate(LSTM_128_OVER_28, 0.98, "expansion") == [200] * 8


def test_matrix_sparsities_give_back_the_allocated_counts_through_the_masks():
    rng = np.random.default_rng(0)
    weights = {"kernel": rng.normal(size=(28, 512)), "recurrent_kernel": rng.normal(size=(128, 512))}
    targets = allocation.matrix_sparsities({k: w.shape for k, w in weights.items()}, 4, 0.95, "erk")
    kept = [int(block.sum()) for key in weights
            for block in np.split(masks.compute_mask(weights[key], targets[key], "degree_floor_magnitude", 4), 4, 1)]
    assert kept == allocation.allocate(LSTM_128_OVER_28, 0.95, "erk")
    assert allocation.matrix_sparsities({"kernel": (28, 512)}, 4, 0.9) == {"kernel": 0.9}


def test_the_decision_prunes_each_graph_to_its_allocation():
    rng = np.random.default_rng(1)
    weights = {"kernel": rng.normal(size=(28, 384)), "recurrent_kernel": rng.normal(size=(128, 384))}
    settings = decision.DecisionSettings(stop_rule="monitor", allocation="expansion")
    verdict = decision.decide("gru", ("z", "r", "h"), weights, 0.95, 100, settings)
    kept = [int(block.sum()) for key in ("kernel", "recurrent_kernel") for block in np.split(verdict.masks[key], 3, 1)]
    assert kept == allocation.allocate([(28, 128)] * 3 + [(128, 128)] * 3, 0.95, "expansion")


@pytest.mark.parametrize("call, match", [
    (lambda: allocation.allocate([(4, 4)], 0.5, "rigl"), r"`allocation`.*'rigl'"),
    (lambda: allocation.allocate([(4, 4)], 1.0), r"`sparsity`.*1\.0"),
    (lambda: allocation.check_allocation("erk", "magnitude"), r"`allocation`='erk'.*mask_policy='magnitude'"),
    (lambda: masks.compute_mask(np.ones((4, 8)), [0.5, 0.5, 0.5], "per_gate_magnitude", 2), r"one per gate block"),
])
def test_bad_allocations_name_the_argument_and_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
