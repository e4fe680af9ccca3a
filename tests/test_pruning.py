"""Expansion-aware pruning during model.fit: schedule, callback, stop rule, save/load, strip.

The behaviour tests take the `K` fixture and run once with tf_keras (tfmot's wrapper) and once with Keras 3 (our
wrapper); tests/test_backends.py runs the Keras 3 ones again on JAX and PyTorch (`-k keras3`).
"""

import json
import math

import keras
import numpy as np
import pytest

import keras_expander as ke
from keras_expander import layers as layers_lib
from keras_expander.expansion import analysis
from keras_expander.frameworks import keras_flavour, tf, tf_keras, tfmot
from keras_expander.layers import is_expander, is_pruning_wrapper
from keras_expander.pruning import wrapper as wrapper_lib
from keras_expander.pruning.schedule import ExpanderPruningSchedule
from keras_expander.tflite import export


@pytest.fixture(params=["tf_keras", "keras3"])
def K(request):
    """The Keras module a test builds its model with."""
    return tf_keras if request.param == "tf_keras" else keras


def masks_of(wrapper):
    return [entry[1].numpy() for entry in wrapper.pruning_vars]


def data(n=256, steps=6, features=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, steps, features)).astype("float32")
    return x, (x[:, :, 0].sum(axis=1) > 0).astype("int64")


def model_with(cell, units=16, features=8, K=tf_keras):
    layer = {"lstm": K.layers.LSTM, "simple_rnn": K.layers.SimpleRNN, "gru": K.layers.GRU}[cell]
    return K.Sequential([K.Input((6, features)), layer(units, name="rnn"), K.layers.Dense(2, name="out")])


def compile_(model):
    K = keras if keras_flavour(model) == "keras3" else tf_keras
    model.compile("adam", K.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def fit(model, epochs=2, callback=None, seed=0):
    x, y = data(seed=seed)
    callback = callback or ke.ExpanderPruningCallback()
    history = model.fit(x, y, batch_size=32, epochs=epochs, callbacks=[callback], verbose=0)
    return history, callback


# -- schedule -------------------------------------------------------------------------------------------------


def test_schedule_config_round_trips_through_json():
    schedule = ExpanderPruningSchedule(final_sparsity=0.8, begin_step=10, end_step=210, frequency=20,
                                       criterion="delta_s", representation="weighted", margin=0.25,
                                       gate_view="union", stop_rule="monitor", power=2.0, initial_sparsity=0.1)
    text = json.dumps(schedule.get_config())
    clone = ExpanderPruningSchedule.from_config(json.loads(text))
    assert clone.get_config() == schedule.get_config()
    restored = tf_keras.utils.deserialize_keras_object(json.loads(text),
                                                       custom_objects={"ExpanderPruningSchedule":
                                                                       ExpanderPruningSchedule})
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize("kwargs,match", [
    (dict(final_sparsity=1.2), "final_sparsity=1.2"),
    (dict(final_sparsity=-0.1), "final_sparsity=-0.1"),
    (dict(initial_sparsity=1.0), "initial_sparsity=1.0"),
    (dict(begin_step=-1), "begin_step=-1"),
    (dict(begin_step=100, end_step=100), "end_step=100"),
    (dict(end_step=-1), "end_step=-1"),
    (dict(frequency=0), "frequency=0"),
    (dict(criterion="cheeger"), "criterion='cheeger'"),
    (dict(representation="signed"), "representation='signed'"),
    (dict(gate_view="gates"), "gate_view='gates'"),
    (dict(stop_rule="stop"), "stop_rule='stop'"),
    (dict(base="cosine"), "base='cosine'"),
    (dict(margin=float("nan")), "margin=nan"),
    (dict(power=0), "power=0"),
    (dict(tolerance=-1.0), "tolerance=-1.0"),
    (dict(stop_rule="tolerance", tolerance=float("inf")), "tolerance=inf"),
    (dict(tolerance_window=0), "tolerance_window=0"),
    (dict(tolerance_window=2.5), "tolerance_window=2.5"),
])
def test_schedule_bad_argument_names_it_and_the_value(kwargs, match):
    arguments = dict(final_sparsity=0.5, begin_step=0, end_step=100) | kwargs
    with pytest.raises(ValueError, match=match):
        ExpanderPruningSchedule(**arguments)


def test_schedule_without_end_step_says_polynomial_decay_needs_one_and_constant_sparsity_runs_on():
    with pytest.raises(ValueError, match=r"`end_step` is required with base='polynomial_decay'.*final_sparsity=0.9.*"
                                         r"steps_per_epoch.*Received: end_step=None"):
        ExpanderPruningSchedule(final_sparsity=0.9)
    constant = ExpanderPruningSchedule(final_sparsity=0.9, base="constant_sparsity")
    assert constant.get_config()["config"]["end_step"] == -1 and constant.is_pruning_turn(10 ** 6 * 100)


def test_next_target_is_the_first_schedule_step_past_the_committed_sparsity():
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.9, begin_step=10, end_step=50, frequency=10)
    targets = [0.9 * (1 - (1 - k / 4) ** 3) for k in range(5)]  # PolynomialDecay (power 3) at steps 10, 20, .., 50
    assert [schedule.target_at(10 + 10 * k) for k in range(5)] == pytest.approx(targets)
    assert schedule.next_target(0.0) == pytest.approx(targets[1])
    assert schedule.next_target(targets[1]) == pytest.approx(targets[2])
    assert schedule.next_target(0.6) == pytest.approx(targets[2])
    assert schedule.next_target(0.9) == 0.9
    assert [schedule.is_last_turn(step) for step in (40, 49, 50)] == [False, False, True]
    constant = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.7, frequency=5, base="constant_sparsity")
    assert constant.next_target(0.2) == 0.7 and not constant.is_last_turn(10 ** 9)


def test_schedule_matches_tfmot_polynomial_decay_and_is_capped_in_graph():
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.9, begin_step=0, end_step=100, frequency=10)
    reference = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.9, begin_step=0,
                                                     end_step=100, frequency=10)
    stopped, cap = tf.Variable(0.0), tf.Variable(1.0)
    schedule.bind_state(stopped, cap)
    in_graph = tf.function(schedule.__call__)
    for step in (0, 10, 35, 50, 100):
        ours, theirs = in_graph(tf.constant(step, tf.int64)), reference(tf.constant(step, tf.int64))
        assert bool(ours[0]) == bool(theirs[0]) and abs(float(ours[1]) - float(theirs[1])) <= 1e-7
    # Our copy of tfmot's formulas (the Keras 3 path runs without tfmot) agrees with tfmot on every step.
    for base, end_step, reference in (
            ("polynomial_decay", 95, tfmot.sparsity.keras.PolynomialDecay(
                initial_sparsity=0.1, final_sparsity=0.8, begin_step=5, end_step=95, power=2.0, frequency=7)),
            ("constant_sparsity", -1, tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=5, frequency=7))):
        unbound = ExpanderPruningSchedule(final_sparsity=0.8, initial_sparsity=0.1, begin_step=5, end_step=end_step,
                                          power=2.0, frequency=7, base=base)
        for step in range(130):
            theirs = reference(tf.constant(step, tf.int64))
            # the numpy float32 path (integer steps: the callback, every Keras 3 backend) and the TensorFlow one
            for ours in (unbound._base_schedule(step), unbound._base_schedule_tf(tf.constant(step, tf.int64))):
                assert bool(ours[0]) == bool(theirs[0]), (base, step)
                assert abs(float(ours[1]) - float(theirs[1])) <= 1e-7, (base, step)
    cap.assign(0.3)
    assert abs(float(in_graph(tf.constant(50, tf.int64))[1]) - 0.3) <= 1e-7
    stopped.assign(1.0)
    assert not bool(in_graph(tf.constant(50, tf.int64))[0])


@pytest.mark.parametrize("base,end_step", [("polynomial_decay", 95), ("constant_sparsity", -1)])
def test_python_pruning_turn_agrees_with_tfmot_in_graph_rule(base, end_step):
    schedule = ExpanderPruningSchedule(final_sparsity=0.5, begin_step=5, end_step=end_step, frequency=7, base=base)
    for step in range(0, 130):
        assert schedule.is_pruning_turn(step) == bool(schedule(tf.constant(step, tf.int64))[0]), step


# -- prune_expander and the callback --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "simple_rnn", "gru"])
@pytest.mark.parametrize("policy", ke.MASK_POLICIES)
def test_policy_reaches_target_sparsity_during_fit(cell, policy, K):
    if K is keras and cell != "lstm":
        pytest.skip("masks are chosen the same way for both Kerases: Keras 3 runs every policy on LSTM only")
    base = "constant_sparsity" if policy.startswith("random") else "polynomial_decay"
    schedule = ExpanderPruningSchedule(final_sparsity=0.7, begin_step=0, end_step=8, frequency=2, base=base,
                                       stop_rule="monitor")
    model = compile_(ke.prune_expander(model_with(cell, K=K), schedule, mask_policy=policy))
    history, _ = fit(model)
    layer = model.layers[0]
    assert is_expander(layer) and isinstance(model.layers[1], K.layers.Dense)
    assert abs(history.history["sparsity/rnn"][-1] - 0.7) <= 0.005
    weights = [entry[0].numpy() for entry in layer.pruning_vars]
    measured = 1 - sum(np.count_nonzero(w) for w in weights) / sum(w.size for w in weights)
    assert abs(measured - 0.7) <= 0.005
    if policy == "degree_floor_magnitude":
        report = analysis.analyze_layer(layer)
        assert all(r.unweighted.isolated_left == 0 and r.unweighted.isolated_right == 0 for r in report)


def test_logs_hold_one_worst_value_per_layer_and_every_graph_on_request(K):
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, begin_step=0, end_step=8, frequency=2)
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    history, callback = fit(model)
    union = {f"rnn/{matrix}/union" for matrix in ("kernel", "recurrent_kernel")}
    assert set(history.history) == {"loss", "accuracy", "sparsity/rnn", "stopped/rnn", "min_delta_r/rnn"}
    report = analysis.analyze_layer(model.layers[0], gate_views=("union",))
    assert {r.name for r in report} == union
    assert history.history["min_delta_r/rnn"][-1] == pytest.approx(min(r.unweighted.delta_r for r in report))
    assert callback.events and all(event.committed for event in callback.events)
    assert all(set(event.graphs) == union and set(event.graphs["rnn/kernel/union"]) == {
        "delta_r", "delta_s", "spectral_gap"} for event in callback.events)
    last = callback.events[-1]
    assert last.worst_value == min(values["delta_r"] for values in last.graphs.values())

    history, _ = fit(model, epochs=1, callback=ke.ExpanderPruningCallback(log_graphs=True))
    assert {key for key in history.history if "/rnn/" in key} == {
        f"{kind}/{name}" for kind in ("delta_r", "delta_s", "spectral_gap") for name in union}


def test_stop_rule_holds_before_delta_crosses_zero(K):
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.97, begin_step=0, end_step=16, frequency=2,
                                       criterion="delta_r", margin=0.0)
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    history, callback = fit(model, epochs=3)
    assert history.history["stopped/rnn"][-1] == 1.0
    held = [e for e in callback.events if not e.committed]
    assert held and held[0].sparsity < 0.97
    assert all(e.layer == "rnn" for e in held)
    report = analysis.analyze_layer(model.layers[0], gate_views=("union",))  # the default view
    assert min(r.unweighted.delta_r for r in report) >= 0.0  # the masks left in place satisfy the rule
    final = history.history["sparsity/rnn"][-1]
    assert abs(final - held[0].sparsity) <= 1e-9
    assert abs(float(model.layers[0].expansion_sparsity_cap.numpy()) - final) <= 1e-6


def rank_one_rnn(stop_rule, K):
    """SimpleRNN(32) over 16 features whose kernel has |w| = a_i b_j, pruned once to 50 % with a margin just above
    the Delta_R of its magnitude mask: the candidate fails only through its block structure."""
    rng = np.random.default_rng(0)
    kernel = np.outer(rng.lognormal(0, 1, 16), rng.lognormal(0, 1, 32)) * 0.05
    recurrent = rng.normal(size=(32, 32)) * 0.1
    magnitude = ke.compute_mask(kernel, 0.5, "degree_floor_magnitude")
    margin = ke.spectral_metrics(magnitude).delta_r + 0.05
    recurrent_delta = ke.spectral_metrics(ke.compute_mask(recurrent, 0.5, "degree_floor_magnitude")).delta_r
    assert recurrent_delta >= margin  # only the kernel graph fails
    schedule = ExpanderPruningSchedule(final_sparsity=0.5, begin_step=0, frequency=1, base="constant_sparsity",
                                       margin=margin, stop_rule=stop_rule)
    model = ke.prune_expander(model_with("simple_rnn", units=32, features=16, K=K), schedule)
    model.layers[0].layer.cell.kernel.assign(kernel)
    model.layers[0].layer.cell.recurrent_kernel.assign(recurrent)
    x, y = data(n=32, features=16)  # one batch: one pruning event, on the weights set above
    callback = ke.ExpanderPruningCallback()
    compile_(model).fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    return model, callback, margin, kernel, recurrent


def test_hold_holds_where_correct_repairs_the_failing_graph(K):
    _, held_callback, *_ = rank_one_rnn("hold", K)
    assert [e.committed for e in held_callback.events] == [False]

    model, callback, margin, kernel, recurrent = rank_one_rnn("correct", K)
    [event] = callback.events
    assert event.committed and 0.0 <= event.kept_share < 1.0
    assert "rnn/kernel/all" in event.reason and "rnn/recurrent_kernel" not in event.reason
    assert abs(event.sparsity - 0.5) <= 0.005
    report = analysis.analyze_layer(model.layers[0])
    assert min(r.unweighted.delta_r for r in report) >= margin
    kernel_mask, recurrent_mask = masks_of(model.layers[0])
    # the event ran before the optimizer step: only the failing graph departs from its magnitude mask
    assert np.array_equal(recurrent_mask != 0, ke.compute_mask(recurrent, 0.5, "degree_floor_magnitude"))
    assert not np.array_equal(kernel_mask != 0, ke.compute_mask(kernel, 0.5, "degree_floor_magnitude"))
    assert float(model.layers[0].expansion_stopped.numpy()) == 0.0


def tolerance_steps(K, tolerance, end_step=-1):  # one measurement judged: tolerance_window=1
    """Pruning steps at every batch (two batches, 90 %) of an untrained LSTM(16) under stop_rule="tolerance", with
    held-out labels equal to the model's own predictions before pruning (held-out accuracy 100 % then) and learning
    rate 0 (the weights never change, so held-out accuracy moves only with the masks). end_step -1: constant 90 %;
    else polynomial decay to 90 % at end_step."""
    base = "constant_sparsity" if end_step == -1 else "polynomial_decay"
    schedule = ExpanderPruningSchedule(final_sparsity=0.9, begin_step=0, end_step=end_step, frequency=1, base=base,
                                       stop_rule="tolerance", tolerance=tolerance, tolerance_window=1)
    model = ke.prune_expander(model_with("lstm", K=K), schedule)
    x, y = data(n=64)
    holdout = data(n=256, seed=5)[0]
    labels = np.argmax(model.predict(holdout, verbose=0), axis=1)
    model.compile(K.optimizers.SGD(0.0), K.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = ke.ExpanderPruningCallback(holdout=(holdout, labels))
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    accuracy = float(np.mean(np.argmax(model.predict(holdout, verbose=0), axis=1) == labels))
    return model, callback, accuracy


def test_tolerance_rule_pauses_while_pruning_costs_held_out_accuracy(K):
    model, callback, accuracy = tolerance_steps(K, tolerance=1.0)
    assert accuracy < 0.99  # the 90 % masks change the predictions: the second step sees the drop
    first, second = callback.events
    assert first.committed and abs(first.sparsity - 0.9) <= 0.005
    assert not second.committed and second.sparsity == first.sparsity  # paused at the masks it has
    assert second.reason == (f"paused: held-out accuracy is {100 * accuracy:.2f} %, {100 * (1 - accuracy):.2f} "
                             f"points below the best 100.00 % of this fit (tolerance 1 points)")
    assert abs(wrapper_lib.mask_sparsity(model.layers[0]) - 0.9) <= 0.005
    assert float(model.layers[0].expansion_stopped.numpy()) == 0.0  # a pause, not a hold: it may resume

    _, callback, _ = tolerance_steps(K, tolerance=100.0)
    assert [e.committed for e in callback.events] == [True, True]


def test_tolerance_rule_holds_where_its_last_pruning_step_pauses(K):
    # Steps 1 and 2 of a polynomial decay to 90 % at step 2: 0.9 * (1 - 0.5 ** 3) = 78.75 %, then paused at 90 %.
    model, callback, accuracy = tolerance_steps(K, tolerance=1.0, end_step=2)
    first, second = callback.events
    assert first.committed and abs(first.sparsity - 0.7875) <= 0.005 and accuracy < 0.99
    assert not second.committed and not second.reason.startswith("paused")
    assert second.reason.startswith(f"held-out accuracy is {100 * accuracy:.2f} %")
    assert float(model.layers[0].expansion_stopped.numpy()) == 1.0
    assert float(model.layers[0].expansion_sparsity_cap.numpy()) == pytest.approx(first.sparsity)


def test_tolerance_rule_resumes_one_schedule_step_at_a_time(K, monkeypatch):
    # Scripted held-out accuracies (the measurement is ours; the masks, the fit and the schedule are real). The
    # schedule's targets at steps 1..4 of a decay to 90 % at step 4: 52.03, 78.75, 88.59 and 90 %.
    accuracies = iter([1.0, 0.9, 1.0, 1.0])
    monkeypatch.setattr(ke.ExpanderPruningCallback, "_holdout_accuracy", lambda self: next(accuracies))
    schedule = ExpanderPruningSchedule(final_sparsity=0.9, begin_step=0, end_step=4, frequency=1,
                                       stop_rule="tolerance", tolerance_window=1)
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    x, y = data(n=128)
    callback = ke.ExpanderPruningCallback(holdout=(x, y))
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    steps = [(e.step, e.committed, round(e.target_sparsity, 4)) for e in callback.events]
    assert [e.holdout_accuracy for e in callback.events] == [1.0, 0.9, 1.0, 1.0, 1.0]
    # step 2 pauses at 78.75 %; step 3 resumes with the step after the last committed one (78.75 %, not 88.59 %);
    # step 4 takes 88.59 %, short of 90 % when the schedule ends: the layer is held there.
    assert steps == [(1, True, 0.5203), (2, False, 0.7875), (3, True, 0.7875), (4, True, 0.8859), (4, False, 0.9)]
    assert callback.events[1].reason.startswith("paused: held-out accuracy is 90.00 %, 10.00 points below")
    assert "short of final_sparsity 0.9" in callback.events[-1].reason
    assert abs(wrapper_lib.mask_sparsity(model.layers[0]) - 0.8859) <= 0.005
    assert float(model.layers[0].expansion_stopped.numpy()) == 1.0


def test_tolerance_rule_judges_the_mean_of_its_last_window_measurements(K, monkeypatch):
    # Scripted held-out accuracies, as above; the default tolerance_window=3. Step 2's single measurement is 1.5
    # points below the best (a pause with window 1); the mean of steps 1-2 is 0.75 below, within 1 point. Step 4's
    # mean of steps 2-4, (98.5 + 99 + 96) / 3 = 97.83 %, is 2.17 points below the best mean (100 %): held there.
    def run(window):
        accuracies = iter([1.0, 0.985, 0.99, 0.96])
        monkeypatch.setattr(ke.ExpanderPruningCallback, "_holdout_accuracy", lambda self: next(accuracies))
        schedule = ExpanderPruningSchedule(final_sparsity=0.9, begin_step=0, end_step=4, frequency=1,
                                           **({} if window is None else {"tolerance_window": window}))
        model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
        x, y = data(n=128)
        callback = ke.ExpanderPruningCallback(holdout=(x, y))
        model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
        return model, callback.events

    model, events = run(None)
    assert [(e.step, e.committed, round(e.target_sparsity, 4)) for e in events] == \
        [(1, True, 0.5203), (2, True, 0.7875), (3, True, 0.8859), (4, False, 0.9)]
    assert events[-1].reason == ("held-out accuracy (mean of the last 3 steps) is 97.83 %, 2.17 points below the "
                                 "best 100.00 % of this fit (tolerance 1 points)")
    assert [e.holdout_accuracy for e in events] == [1.0, 0.985, 0.99, 0.96]
    assert float(model.layers[0].expansion_stopped.numpy()) == 1.0
    assert abs(wrapper_lib.mask_sparsity(model.layers[0]) - 0.8859) <= 0.005
    _, events = run(1)
    assert events[1].paused and events[1].reason.startswith("paused: held-out accuracy is 98.50 %, 1.50 points")


def scripted_tolerance_fit(K, monkeypatch, accuracies, begin_step=0, **settings):
    """A real fit of LSTM(16) pruned at every batch from `begin_step` (20 steps, polynomial decay to 90 % at
    begin_step + 20) under stop_rule="tolerance", with the held-out accuracies of its measurements scripted."""
    scripted = iter(accuracies)
    monkeypatch.setattr(ke.ExpanderPruningCallback, "_holdout_accuracy", lambda self: next(scripted))
    schedule = ExpanderPruningSchedule(final_sparsity=0.9, begin_step=begin_step, end_step=begin_step + 20,
                                       frequency=1, **settings)
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    x, y = data(n=(begin_step + 21) * 32)  # a batch past end_step: the schedule ends inside the fit
    callback = ke.ExpanderPruningCallback(holdout=(x, y))
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    return callback


def test_a_model_still_learning_while_it_is_pruned_is_warned_with_its_trend(monkeypatch):
    K = keras  # the callback's logic, the same for both Kerases (their step clocks: the test below)
    # Steps 1-5 are measured while the layer is at most 50 % sparse (targets 12.9, 24.4, 34.7, 43.9 % committed
    # before them; 52.0 % at step 5): they rise 2 points a step, 2,000 points per 1,000 steps on a least-squares
    # line, which projects 28 points, far more than the 1-point tolerance, over the 14 steps left.
    rising = [0.50, 0.52, 0.54, 0.56, 0.58] + [0.58] * 15
    with pytest.warns(ke.StillLearningWarning, match=r"rises \+2000.00 \+- 0.00 points per 1,000 steps \(5 "
                      r"measurements at steps 1-5, 50.0 % -> 58.0 % on the fitted line\), \+28.0 points over the "
                      r"14 steps left to end_step") as caught:
        callback = scripted_tolerance_fit(K, monkeypatch, rising)
    assert len([w for w in caught if w.category is ke.StillLearningWarning]) == 1
    assert callback.learning_trend.slope == pytest.approx(2000.0) and callback.learning_trend.measurements == 5
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ke.StillLearningWarning)  # a flat or noisy calibration phase: no warning
        flat = scripted_tolerance_fit(K, monkeypatch, [0.50, 0.52, 0.49, 0.51, 0.50] + [0.50] * 15)
    assert not flat.learning_trend.still_learning


def test_the_learning_trend_takes_the_unpruned_steps_before_begin_step(K, monkeypatch):
    # begin_step 8: the unpruned model is measured at steps 4-7 (the later half before it), then as before at the
    # pruning steps 8-13 (8 at sparsity 0, then 12.9-43.9 % committed): 10 measurements, 1 point a step.
    rising = [0.40 + 0.01 * i for i in range(10)] + [0.49] * 15
    with pytest.warns(ke.StillLearningWarning, match=r"rises \+1000.00 \+- 0.00 points per 1,000 steps \(10 "
                      r"measurements at steps 4-13"):
        callback = scripted_tolerance_fit(K, monkeypatch, rising, begin_step=8)
    assert callback.learning_trend.first_step == 4 and callback.learning_trend.measurements == 10
    assert [e.holdout_accuracy for e in callback.events][:2] == [0.44, 0.45]  # the rule's own history from step 8


def test_trend_reference_credits_the_best_with_the_projected_gain_of_the_unpruned_model(monkeypatch):
    K = keras
    # Calibration (steps 1-5): 50.0 -> 52.0 % in steps of 0.5 points, 500 points per 1,000 steps, no scatter.
    # Then flat at 52 %. "best": the mean of the last 3 reaches 52 % and never falls: no pause. "trend": the best
    # mean of step 5 (51.5 %) gains 0.005 * 4 * ln(1 + (k - 5) / 4) by step k (decision.projected_gain, span 4
    # steps); at step 10 that is 1.62 points, 52 % is 1.12 points below 53.12 %: a pause, none before.
    accuracies = [0.500, 0.505, 0.510, 0.515, 0.520] + [0.52] * 15
    with pytest.warns(ke.StillLearningWarning, match="measures drops against the best held-out accuracy"):
        best = scripted_tolerance_fit(K, monkeypatch, accuracies, tolerance_reference="best")
    assert all(e.committed for e in best.events)
    with pytest.warns(ke.StillLearningWarning, match="tolerance_reference='trend' credits the best"):
        trend = scripted_tolerance_fit(K, monkeypatch, accuracies, tolerance_reference="trend")
    paused = [e for e in trend.events if e.paused]
    assert paused and paused[0].step == 10 and all(e.committed for e in trend.events if e.step < 10)
    assert paused[0].reason == ("paused: held-out accuracy (mean of the last 3 steps) is 52.00 %, 1.12 points below "
                                "53.12 %, the unpruned model's accuracy projected from this fit's learning trend "
                                "(best 52.00 %; tolerance 1 points)")


def test_tolerance_rule_needs_a_holdout_of_matching_lengths(K):
    schedule = ExpanderPruningSchedule(final_sparsity=0.5, begin_step=0, end_step=8, frequency=2,
                                       stop_rule="tolerance")
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    with pytest.raises(ValueError, match="holdout=None"):
        fit(model, epochs=1)
    x, y = data()
    with pytest.raises(ValueError, match="lengths 256 and 3"):
        ke.ExpanderPruningCallback(holdout=(x, y[:3]))


def test_correct_rule_needs_the_unweighted_graph():
    with pytest.raises(ValueError, match="representation='weighted'"):
        ExpanderPruningSchedule(final_sparsity=0.5, end_step=10, stop_rule="correct", representation="weighted")


def test_monitor_reaches_target_and_warns_once_per_graph(K):
    schedule = ExpanderPruningSchedule(final_sparsity=0.97, begin_step=0, end_step=16, frequency=2,
                                       stop_rule="monitor")
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    with pytest.warns(UserWarning, match="expansion is lost") as caught:
        history, _ = fit(model, epochs=3)
    messages = [str(w.message).split(":")[0] for w in caught if "expansion is lost" in str(w.message)]
    assert len(messages) == len(set(messages))
    assert abs(history.history["sparsity/rnn"][-1] - 0.97) <= 0.005
    assert history.history["stopped/rnn"][-1] == 0.0


def test_training_without_the_callback_raises(K):
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, begin_step=0, end_step=8, frequency=2)
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    x, y = data()
    others = [tfmot.sparsity.keras.UpdatePruningStep()] if K is tf_keras else []
    with pytest.raises(RuntimeError, match="ExpanderPruningCallback"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=others)
    if K is keras and keras.backend.backend() == "jax":  # Keras' JAX trainer drops the weights of a failed first step
        with pytest.raises(RuntimeError, match="has lost its weights.*Rebuild the model"):
            fit(model, epochs=1)
        model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    fit(model, epochs=1)  # with the callback it trains
    with pytest.raises(RuntimeError, match="ExpanderPruningCallback"):  # and a later fit without it is refused
        model.fit(x, y, epochs=1, verbose=0, callbacks=others)


def test_tfmot_wrapper_with_our_schedule_is_refused():
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, begin_step=0, end_step=8, frequency=2)
    model = compile_(tf_keras.Sequential([tf_keras.Input((6, 8)), tfmot.sparsity.keras.prune_low_magnitude(
        tf_keras.layers.LSTM(4), pruning_schedule=schedule), tf_keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="prune_expander"):
        fit(model, epochs=1)


def test_callback_monitors_plain_tfmot_pruning():
    model = compile_(tfmot.sparsity.keras.prune_low_magnitude(model_with("lstm"), pruning_schedule=(
        tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.6, begin_step=0, end_step=8,
                                             frequency=2))))
    history, _ = fit(model)
    assert abs(history.history["sparsity/rnn"][-1] - 0.6) <= 0.005
    assert math.isfinite(history.history["min_delta_r/rnn"][-1])


def test_prune_expander_arguments(K):
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, begin_step=0, end_step=8, frequency=2)
    with pytest.raises(ValueError, match="nope"):
        ke.prune_expander(model_with("lstm", K=K), schedule, layers=["nope"])
    with pytest.raises(ValueError, match="mask_policy='top_k'"):
        ke.prune_expander(model_with("lstm", K=K), schedule, mask_policy="top_k")
    with pytest.raises(ValueError, match="allocation='rigl'"):
        ke.prune_expander(model_with("lstm", K=K), schedule, allocation="rigl")
    with pytest.raises(ValueError, match="`allocation`='erk'.*mask_policy='magnitude'"):
        ke.prune_expander(model_with("lstm", K=K), schedule, mask_policy="magnitude", allocation="erk")
    with pytest.raises(TypeError, match="StackedRNNCells"):
        ke.prune_expander(K.layers.RNN([K.layers.LSTMCell(4), K.layers.LSTMCell(4)]), schedule)
    with pytest.raises(TypeError, match="ConvLSTM"):
        ke.prune_expander(K.layers.ConvLSTM1D(4, 3), schedule)
    with pytest.raises(ValueError, match="no SimpleRNN, LSTM, GRU or Bidirectional"):
        ke.prune_expander(K.Sequential([K.Input((3,)), K.layers.Dense(2)]), schedule)
    with pytest.raises(TypeError, match="ExpanderPruningSchedule"):
        ke.prune_expander(model_with("lstm", K=K), tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError, match="min_degree=9"):
        ke.prune_expander(model_with("lstm", units=4, features=8, K=K), schedule, min_degree=9)
    with pytest.raises(TypeError, match="Keras 3 or tf_keras"):
        ke.prune_expander(object(), schedule)
    both = ke.prune_expander(model_with("lstm", K=K), schedule, layers=["rnn", "out"])
    assert all(is_expander(layer) for layer in both.layers)


def test_saved_model_resumes_with_same_masks_step_and_stop_state(tmp_path, K):
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.97, begin_step=0, end_step=16, frequency=2)
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule, allocation="expansion"))
    fit(model, epochs=3)
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    restored = ke.load_model(path)
    original, loaded = model.layers[0], restored.layers[0]
    assert type(loaded) is type(original) and loaded.mask_policy == original.mask_policy
    assert loaded.allocation == original.allocation == "expansion"
    assert loaded.pruning_schedule.get_config() == original.pruning_schedule.get_config()
    assert int(loaded.pruning_step.numpy()) == int(original.pruning_step.numpy()) > 0
    assert float(loaded.expansion_stopped.numpy()) == float(original.expansion_stopped.numpy()) == 1.0
    for mask_a, mask_b in zip(masks_of(original), masks_of(loaded)):
        assert np.array_equal(mask_a, mask_b)
    masks_before = masks_of(loaded)
    step_before = int(loaded.pruning_step.numpy())
    fit(restored, epochs=1)  # continues: held layer keeps its masks, the step advances
    assert int(loaded.pruning_step.numpy()) == step_before + 8
    for before, after in zip(masks_before, masks_of(loaded)):
        assert np.array_equal(before, after)


def test_stripped_model_outputs_equal_wrapped_model(K):
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.6, begin_step=0, end_step=8, frequency=2)
    model = compile_(ke.prune_expander(model_with("lstm", K=K), schedule))
    fit(model)
    x, _ = data(n=16, seed=3)
    stripped = ke.strip_pruning(model)
    assert not any(is_pruning_wrapper(layer) for layer in stripped.layers)
    assert np.max(np.abs(stripped.predict(x, verbose=0) - model.predict(x, verbose=0))) <= 1e-6
    kernel = stripped.layers[0].cell.kernel.numpy()
    assert abs((1 - np.count_nonzero(kernel) / kernel.size) - 0.6) <= 0.005


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_graphs_are_gates_z_r_h_and_reach_the_target(K, reset_after):
    inputs = K.Input((6, 8))
    hidden = K.layers.GRU(16, reset_after=reset_after, name="rnn")(inputs)
    model = K.Model(inputs, K.layers.Dense(2, name="out")(hidden))
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.6, begin_step=0, end_step=8, frequency=2,
                                       gate_view="per_gate")
    pruned = compile_(ke.prune_expander(model, schedule))
    history, _ = fit(pruned, callback=ke.ExpanderPruningCallback(log_graphs=True))
    assert abs(history.history["sparsity/rnn"][-1] - 0.6) <= 0.005
    assert {key for key in history.history if key.startswith("delta_r/")} == {
        f"delta_r/rnn/{matrix}/{gate}" for matrix in ("kernel", "recurrent_kernel") for gate in "zrh"}
    x, _ = data(n=16, seed=3)
    stripped = ke.strip_pruning(pruned)
    assert np.max(np.abs(stripped.predict(x, verbose=0) - pruned.predict(x, verbose=0))) <= 1e-6


def test_bidirectional_stacked_and_rnn_cell_layers_are_pruned_per_direction(K):
    inputs = K.Input((6, 8))
    hidden = K.layers.Bidirectional(K.layers.LSTM(8, return_sequences=True), name="bi")(inputs)
    hidden = K.layers.RNN(K.layers.GRUCell(8), return_sequences=True, name="cell_gru")(hidden)
    hidden = K.layers.SimpleRNN(8, name="top")(hidden)
    model = K.Model(inputs, K.layers.Dense(2, name="out")(hidden))
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, begin_step=0, end_step=8, frequency=2,
                                       gate_view="per_gate")
    pruned = compile_(ke.prune_expander(model, schedule, allocation="erk"))
    history, _ = fit(pruned, callback=ke.ExpanderPruningCallback(log_graphs=True))
    for layer in ("bi", "cell_gru", "top"):
        assert abs(history.history[f"sparsity/{layer}"][-1] - 0.5) <= 0.01
    for direction in ("forward", "backward"):
        for gate in "ifco":
            assert f"delta_r/bi/{direction}/recurrent_kernel/{gate}" in history.history
    # Each wrapped layer (both directions together) splits its budget between its graphs as the allocation says.
    for wrapper in (layer for layer in pruned.layers if getattr(layer, "layer", None) is not None):
        gates = len(layers_lib.layer_matrices(wrapper).gates)
        masks = [mask.numpy() for mask in layers_lib.mask_variables(wrapper).values()]
        kept = [int(np.count_nonzero(block)) for mask in masks for block in np.split(mask, gates, axis=1)]
        shapes = [(mask.shape[0], mask.shape[1] // gates) for mask in masks for _ in range(gates)]
        assert kept == ke.allocate(shapes, 0.5, "erk"), wrapper.name


def test_gru_in_a_nested_sequential_is_pruned_stripped_and_exported(K, tmp_path):
    inner = K.Sequential([K.Input((6, 8)), K.layers.GRU(16, name="rnn")], name="encoder")
    model = K.Sequential([K.Input((6, 8)), inner, K.layers.Dense(2, name="out")], name="outer")
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.6, begin_step=0, end_step=8, frequency=2)
    pruned = compile_(ke.prune_expander(model, schedule))
    history, _ = fit(pruned)
    assert abs(history.history["sparsity/rnn"][-1] - 0.6) <= 0.005
    x, _ = data(n=16, seed=3)
    stripped = ke.strip_pruning(pruned)
    assert not wrapper_lib.pruning_wrappers(stripped)
    assert np.max(np.abs(stripped.predict(x, verbose=0) - pruned.predict(x, verbose=0))) <= 1e-6
    kernel = stripped.layers[0].layers[0].cell.kernel.numpy()
    assert abs((1 - np.count_nonzero(kernel) / kernel.size) - 0.6) <= 0.005
    # tf_keras converts the nested model as it is; the tf_keras copy of a Keras 3 model is rebuilt layer by layer
    # and does not nest, which it says instead of failing on a Sequential "layer".
    y = np.arange(len(x)) % 2
    if K is tf_keras:
        (report,) = export.export_model(stripped, ["float32"], x, y, out_dir=str(tmp_path / "out"), target="litert")
        assert report.max_abs_diff_litert_keras <= 1e-5 and report.nonzero_weights < report.total_weights
    else:
        with pytest.raises(ValueError, match="'encoder' is a nested Keras 3 model.*flatten the model"):
            export.export_model(stripped, ["float32"], x, y, out_dir=str(tmp_path / "out"), target="litert")


def test_subclassed_model_nested_with_a_recurrent_layer_is_refused_naming_it(K):
    class Encoder(K.Model):
        def __init__(self):
            super().__init__(name="encoder")
            self.rnn = K.layers.GRU(8, name="rnn")

        def call(self, inputs):
            return self.rnn(inputs)

    model = K.Sequential([K.Input((6, 8)), Encoder(), K.layers.Dense(2)], name="outer")
    schedule = ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, begin_step=0, end_step=8, frequency=2)
    with pytest.raises(TypeError, match=r"'outer' holds subclassed model 'encoder' \(Encoder\).*\['rnn'\].*Flatten"):
        ke.prune_expander(model, schedule)
