"""The pruning decision (keras_expander.pruning.decision) on plain arrays: no TensorFlow, no Keras."""

import subprocess
import sys

import numpy as np
import pytest

from keras_expander.expansion import spectral
from keras_expander.pruning import decision, masks

LSTM_GATES = ("i", "f", "c", "o")


def lstm_weights(seed=0, inputs=28, units=64):
    rng = np.random.default_rng(seed)
    return {"kernel": rng.normal(size=(inputs, 4 * units)), "recurrent_kernel": rng.normal(size=(units, 4 * units))}


def test_decision_module_imports_no_tensorflow_or_keras():
    code = ("import sys, keras_expander.pruning.decision; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_default_settings_measure_the_union_graphs_with_delta_r_and_stop_on_tolerance():
    settings = decision.DecisionSettings()
    assert (settings.criterion, settings.gate_view, settings.margin, settings.stop_rule) == ("delta_r", "union",
                                                                                              0.0, "tolerance")


def test_commit_values_are_the_spectral_metrics_of_the_candidate_union_graphs():
    weights = lstm_weights()
    verdict = decision.decide("rnn", LSTM_GATES, weights, 0.8, step=5, settings=decision.DecisionSettings())
    assert verdict.commit and verdict.reason == "" and verdict.kept_share == 1.0
    assert set(verdict.values) == {"rnn/kernel/union", "rnn/recurrent_kernel/union"}
    for key, matrix in weights.items():
        expected_mask = masks.compute_mask(matrix, 0.8, "degree_floor_magnitude", num_gates=4)
        assert np.array_equal(verdict.masks[key], expected_mask)
        union = np.logical_or.reduce(np.split(expected_mask, 4, axis=1)).astype(float)
        assert verdict.values[f"rnn/{key}/union"]["delta_r"] == pytest.approx(spectral.spectral_metrics(union).delta_r)
    assert verdict.worst_value == min(v["delta_r"] for v in verdict.values.values())
    assert verdict.values[verdict.worst_graph]["delta_r"] == verdict.worst_value


def test_hold_keeps_no_masks_and_names_the_failing_graph_and_margin():
    weights = lstm_weights()
    per_gate = decision.DecisionSettings(gate_view="per_gate", stop_rule="hold")
    verdict = decision.decide("rnn", LSTM_GATES, weights, 0.97, step=1, settings=per_gate)
    assert not verdict.commit and verdict.masks is None
    assert verdict.worst_value < 0.0 and verdict.worst_graph in verdict.below
    assert verdict.worst_graph in verdict.reason and "< margin 0.0" in verdict.reason
    monitored = decision.decide("rnn", LSTM_GATES, weights, 0.97, step=1,
                                settings=decision.DecisionSettings(gate_view="per_gate", stop_rule="monitor"))
    assert monitored.commit and set(monitored.below) == set(verdict.below)
    assert all(value < 0.0 for value in monitored.below.values())


def test_union_view_holds_later_than_per_gate_view():
    # Each union graph has at least the edges of every gate's graph: at the same sparsity, its Delta_R fails later.
    weights = lstm_weights(seed=1)
    first_hold = {}
    for view in ("per_gate", "union"):
        for sparsity in np.arange(0.5, 0.995, 0.01):
            if not decision.decide("rnn", LSTM_GATES, weights, sparsity, 1,
                                   decision.DecisionSettings(gate_view=view, stop_rule="hold")).commit:
                first_hold[view] = sparsity
                break
    assert first_hold["per_gate"] < first_hold["union"]


def test_correct_repairs_only_the_failing_gate_blocks_at_the_same_sparsity():
    # Gate i of the kernel has |w| = a_u b_v: its magnitude mask is a staircase with a large second singular value.
    # The margin sits just above that graph's Delta_R, so only it fails, through its structure alone.
    weights = lstm_weights(seed=2)
    rng = np.random.default_rng(3)
    weights["kernel"][:, :64] = np.outer(rng.lognormal(0, 1, 28), rng.lognormal(0, 1, 64))
    per_gate = {key: masks.compute_mask(matrix, 0.5, "degree_floor_magnitude", num_gates=4)
                for key, matrix in weights.items()}
    staircase = spectral.spectral_metrics(per_gate["kernel"][:, :64].astype(float)).delta_r
    margin = staircase + 0.05
    hold = decision.decide("rnn", LSTM_GATES, weights, 0.5, 3,
                           decision.DecisionSettings(gate_view="per_gate", margin=margin, stop_rule="hold"))
    assert not hold.commit and set(hold.below) == {"rnn/kernel/i"}
    verdict = decision.decide("rnn", LSTM_GATES, weights, 0.5, 3,
                              decision.DecisionSettings(gate_view="per_gate", margin=margin, stop_rule="correct"))
    assert verdict.commit, verdict.reason
    assert verdict.kept_share in decision.CORRECTION_SHARES and verdict.reason.startswith("corrected rnn/kernel/i")
    assert min(v["delta_r"] for v in verdict.values.values()) >= margin
    for key, magnitude in per_gate.items():
        for gate, new, old in zip(LSTM_GATES, np.split(verdict.masks[key], 4, axis=1), np.split(magnitude, 4, axis=1)):
            assert new.sum() == old.sum()  # the same sparsity in every gate
            assert np.array_equal(new, old) == ((key, gate) != ("kernel", "i"))  # only the failing block moves


def test_non_finite_weights_hold_naming_the_graph():
    weights = lstm_weights()
    weights["recurrent_kernel"][3, 2 * 64 + 5] = np.nan  # gate c
    verdict = decision.decide("rnn", LSTM_GATES, weights, 0.5, 1, decision.DecisionSettings())
    assert not verdict.commit and not verdict.finite_weights and verdict.values == {}
    assert "rnn/recurrent_kernel/c" in verdict.reason and verdict.worst_graph == "rnn/recurrent_kernel/c"


def test_worst_graph_ranks_nan_below_every_number():
    values = {"a": {"criterion": 0.3}, "b": {"criterion": float("nan")}, "c": {"criterion": -1.0}}
    value, name = decision.worst_graph(values)
    assert name == "b" and np.isnan(value)
    assert decision.below_margin(values, 0.0).keys() == {"b", "c"}


@pytest.mark.parametrize("reference,candidate,tolerance,hold", [
    (0.90, 0.895, 1.0, False), (0.90, 0.89, 1.0, False), (0.90, 0.8899, 1.0, True), (0.90, 0.95, 0.0, False),
    (0.90, 0.8999, 0.0, True), (0.90, float("nan"), 5.0, True)])
def test_tolerance_verdict_pauses_past_the_tolerance_in_points(reference, candidate, tolerance, hold):
    paused, reason = decision.tolerance_verdict([reference, candidate], 1, tolerance)
    assert paused is hold
    assert (f"tolerance {tolerance:g} points" in reason) is hold


def test_smoothed_holdout_averages_the_last_window_measurements():
    history = [0.80, 0.86, 0.78, 0.84, 0.75]
    # window 1: the present measurement against the best single one
    assert decision.smoothed_holdout(history, 1) == pytest.approx((0.75, 0.86))
    # window 3: means of 1, 2, 3, 3, 3 measurements: 0.80, 0.83, 0.8133, 0.8267, 0.79
    assert decision.smoothed_holdout(history, 3) == pytest.approx((0.79, 0.83))
    assert decision.smoothed_holdout(history, 10) == pytest.approx((np.mean(history), 0.83))
    accuracy, reference = decision.smoothed_holdout([0.9, float("nan")], 2)
    assert np.isnan(accuracy) and reference == 0.9
    for history, window in (([], 3), ([0.9], 0), ([0.9], 1.5)):
        with pytest.raises(ValueError, match=f"window={window!r}"):
            decision.smoothed_holdout(history, window)


def test_tolerance_verdict_with_a_window_pauses_on_a_sustained_drop_not_on_one_low_measurement():
    one_low = [0.86, 0.86, 0.86, 0.845]
    assert decision.tolerance_verdict(one_low, 1, 1.0)[0]  # 1.5 points below the best single measurement
    assert not decision.tolerance_verdict(one_low, 3, 1.0)[0]  # mean 85.5 %, 0.5 points below
    paused, reason = decision.tolerance_verdict([0.86, 0.86, 0.86, 0.84, 0.83, 0.82], 3, 1.0)
    assert paused and reason == ("held-out accuracy (mean of the last 3 steps) is 83.00 %, 3.00 points below the "
                                 "best 86.00 % of this fit (tolerance 1 points)")


def test_tolerance_plan_prunes_pauses_and_holds():
    # Recovered: the schedule's next step after the last committed one, not the (larger) target of this step.
    assert decision.tolerance_plan([0.97, 0.965], 1, 1.0, 0.8859, 0.7875, 0.9, last_step=False) == \
        decision.TolerancePlan(True, 0.7875, False)
    assert decision.tolerance_plan([0.97, 0.965], 1, 1.0, 0.7875, 0.8859, 0.9, last_step=False).target == 0.7875
    # Not recovered: a pause (not a hold) before the schedule's last step ...
    paused = decision.tolerance_plan([0.97, 0.95], 1, 1.0, 0.8859, 0.7875, 0.9, last_step=False)
    assert paused.paused and not paused.prune and not paused.hold and paused.target == 0.8859
    assert paused.reason == ("paused: held-out accuracy is 95.00 %, 2.00 points below the best 97.00 % of this fit "
                             "(tolerance 1 points)")
    # ... and a hold at it, or after its last step when that step is short of the final sparsity.
    held = decision.tolerance_plan([0.97, 0.95], 1, 1.0, 0.9, 0.7875, 0.9, last_step=True)
    assert held.hold and not held.prune and not held.paused and held.reason.startswith("held-out accuracy is 95.00")
    short = decision.tolerance_plan([0.97, 0.97], 1, 1.0, 0.9, 0.8859, 0.9, last_step=True)
    assert short.prune and short.hold and short.target == 0.8859 and "short of final_sparsity 0.9" in short.reason
    # float32 targets of the last step count as the final sparsity
    assert decision.tolerance_plan([0.97, 0.97], 1, 1.0, 0.8999999761581421, 0.8999999761581421, 0.9, True) == \
        decision.TolerancePlan(True, 0.8999999761581421, False)


def test_settings_of_a_schedule_like_object():
    class Schedule:
        criterion, representation, margin, gate_view, stop_rule = "delta_s", "weighted", 0.5, "stacked", "monitor"

    settings = decision.DecisionSettings.of(Schedule(), "per_gate_magnitude", 2, 7, "dense")
    assert settings == decision.DecisionSettings("delta_s", "weighted", 0.5, "stacked", "monitor",
                                                 "per_gate_magnitude", 2, 7, "dense")


def test_learning_trend_is_the_least_squares_line_in_points_per_thousand_steps():
    # 50, 52, 54, 56 % at steps 0, 10, 20, 30: 0.2 points a step = 200 points per 1,000 steps, exactly on the line
    trend = decision.learning_trend([0, 10, 20, 30], [0.50, 0.52, 0.54, 0.56])
    assert trend.slope == pytest.approx(200.0) and trend.standard_error == pytest.approx(0.0, abs=1e-9)
    assert (trend.first_step, trend.last_step, trend.measurements) == (0, 30, 4)
    assert (trend.first_accuracy, trend.last_accuracy) == pytest.approx((50.0, 56.0))
    assert trend.still_learning and trend.gain(100) == pytest.approx(20.0)
    # residuals +-1 point about a flat line: slope 0, standard error sqrt(4 / 2 / 500) * 1000 = 63.2 per 1,000 steps
    flat = decision.learning_trend([0, 10, 20, 30], [0.51, 0.49, 0.49, 0.51])
    assert flat.slope == pytest.approx(0.0, abs=1e-9) and flat.standard_error == pytest.approx(63.2456, rel=1e-4)
    assert not flat.still_learning
    # a rise within two standard errors is not called learning: slope 40, residuals 3, -3, -3, 3 -> error 189.7
    noisy = decision.learning_trend([0, 10, 20, 30], [0.53, 0.474, 0.478, 0.542])
    assert noisy.slope == pytest.approx(40.0) and noisy.standard_error == pytest.approx(189.737, rel=1e-4)
    assert not noisy.still_learning


def test_learning_trend_needs_four_finite_measurements_at_two_steps_or_more():
    assert decision.learning_trend([0, 10, 20], [0.5, 0.6, 0.7]) is None
    assert decision.learning_trend([0, 10, 20, 30], [0.5, float("nan"), 0.6, 0.7]) is None
    assert decision.learning_trend([5, 5, 5, 5], [0.5, 0.6, 0.7, 0.8]) is None
    assert decision.learning_trend([0, 10, 20, 30, 40], [0.5, float("nan"), 0.6, 0.7, 0.8]).measurements == 4
