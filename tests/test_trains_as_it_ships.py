"""No silent wrong results, round 2: what trains is what ships, and every verdict is true.

Each test is named after the behaviour it holds and failed before the fix; the bad-input table of
docs/reliability.md lists them. Models are tiny (a few units, 6 time steps), so that the whole file runs in about a
minute and a half on 2 cores; conversions that can stop before the TFLM arena search use target="litert".
"""

import dataclasses
import logging
import warnings

import keras
import numpy as np
import pytest

import keras_expander as ke
from keras_expander.firmware import project
from keras_expander.frameworks import tf, tf_keras
from keras_expander.pruning.schedule import UnreachedSparsityWarning
from keras_expander.tflite import converter_model, export

STEPS, FEATURES = 6, 5
KERASES = {"tf_keras": tf_keras, "keras3": keras}


def data(n=32, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, STEPS, FEATURES)).astype("float32")
    return x, rng.integers(0, classes, n)


def lstm_model(K=tf_keras, **settings):
    K.utils.set_random_seed(0)
    return K.Sequential([K.Input((STEPS, FEATURES)), K.layers.LSTM(8, name="lstm", **settings),
                         K.layers.Dense(3, name="logits")])


def schedule(**kwargs):
    return ke.ExpanderPruningSchedule(**(dict(final_sparsity=0.5, begin_step=0, end_step=8, frequency=2,
                                                   stop_rule="hold") | kwargs))


# -- 1. Export changes the model --------------------------------------------------------------------------------


def test_every_activation_the_export_passes_on_is_exact_in_tf_keras():
    grid = np.linspace(-6, 6, 1200, dtype="float32").reshape(12, 100)
    for name in converter_model.EXACT_ACTIVATIONS:
        ours = np.asarray(keras.activations.get(name)(grid))
        theirs = tf_keras.activations.get(name)(tf.constant(grid)).numpy()
        assert np.max(np.abs(ours - theirs)) <= 1e-6, name
    assert "hard_sigmoid" not in converter_model.EXACT_ACTIVATIONS


def keras3_lora_model():
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(8), keras.layers.Dense(3, name="lora")])
    model.layers[-1].enable_lora(2)
    return model


def keras3_quantized_model():
    model = lstm_model(keras)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LSTMCell does not have a `quantize` method": only the Dense is quantized
        model.quantize("int8")
    return model


@pytest.mark.parametrize("build,says", [
    (lambda: lstm_model(keras, recurrent_activation="hard_sigmoid"),
     r"Layer 'lstm': recurrent_activation='hard_sigmoid' has no exact tf_keras counterpart"),
    (keras3_lora_model, r"Layer 'lora' \(Dense\): the Keras 3 setting lora_rank=2 has no tf_keras counterpart"),
    (keras3_quantized_model, r"Layer 'logits': dtype policy QuantizedDTypePolicy\(mode='int8'"),
], ids=["hard_sigmoid", "lora_rank", "quantized"])
def test_keras3_setting_tf_keras_computes_differently_is_refused_naming_it(build, says, tmp_path):
    x, y = data(8)
    with pytest.raises(ValueError, match=says):
        export.export_model(build(), modes=("float32",), x_test=x, y_test=y, out_dir=tmp_path / "out",
                            target="litert")
    assert not (tmp_path / "out").exists()


# The int8 verification failing an export: test_cli_data_example.py (exit code 1, nothing written).


def test_float_flatbuffer_that_computes_something_else_fails_verification():
    x, y = data(8)
    model = lstm_model(use_bias=False)  # a WHILE-loop LSTM: refused for int8 (below), exact in float32
    content, _ = export.convert(model, "float32", target="litert")
    export.check_agreement(export.verify_and_report(model, content, "float32", x, y, "float32.tflite",
                                                    target="litert"))
    model.layers[-1].bias.assign(np.full(3, 0.5, np.float32))  # the Keras model is no longer what was converted
    report = export.verify_and_report(model, content, "float32", x, y, "float32.tflite", target="litert")
    with pytest.raises(export.ExportError, match=r"mode 'float32' failed verification: LiteRT differs from Keras "
                                                 r"by up to 0.5 \(tolerance 0.00"):
        export.check_agreement(report)
    # TFLM is compared with Keras (and LiteRT) as well, not only LiteRT with Keras.
    quantized = dataclasses.replace(report, mode="int8", max_abs_diff_litert_keras=0.0,
                                           argmax_agreement_litert_keras=1.0, argmax_agreement_tflm_keras=0.5,
                                           argmax_agreement_tflm_litert=0.5, max_abs_diff_tflm_keras=0.1)
    with pytest.raises(export.ExportError, match="TFLM and Keras predict the same class on 50.0 %, TFLM and LiteRT"):
        export.check_agreement(quantized)


# -- 2. Training changes the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", KERASES)
def test_wrapped_layers_pass_masks_and_states_through_as_the_unwrapped_layer(flavour):
    K = KERASES[flavour]
    x, _ = data(8)
    x[:, 4:] = 0.0  # padding that Masking hides
    K.utils.set_random_seed(0)
    masked = K.Sequential([K.Input((STEPS, FEATURES)), K.layers.Masking(),
                           K.layers.LSTM(8, return_sequences=True), K.layers.LSTM(8), K.layers.Dense(3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = ke.prune_expander(masked, schedule())
        assert np.array_equal(pruned.predict(x, verbose=0), masked.predict(x, verbose=0))
    assert not [w for w in caught if "does not support masking" in str(w.message)]

    K.utils.set_random_seed(0)
    inputs = K.Input((STEPS, FEATURES))
    sequence, h, c = K.layers.LSTM(8, return_state=True, name="encoder")(inputs)
    decoded = K.layers.LSTM(8, name="decoder")(K.layers.RepeatVector(3)(sequence), initial_state=[h, c])
    encoder_decoder = K.Model(inputs, K.layers.Dense(3)(decoded))
    pruned = ke.prune_expander(encoder_decoder, schedule())
    assert np.array_equal(pruned.predict(x, verbose=0), encoder_decoder.predict(x, verbose=0))

    def stateful():
        K.utils.set_random_seed(0)
        return K.Sequential([K.Input((STEPS, FEATURES), batch_size=4), K.layers.LSTM(8, stateful=True),
                             K.layers.Dense(3)])

    def reset(model):  # tf_keras: model.reset_states(); Keras 3 has none, users reset each stateful layer
        if hasattr(model, "reset_states"):
            model.reset_states()
        for layer in model.layers:
            if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
                layer.reset_state()

    reference, pruned = stateful(), ke.prune_expander(stateful(), schedule())
    run = lambda model: model.predict(x[:4], batch_size=4, verbose=0)  # noqa: E731
    first = run(pruned)
    assert np.array_equal(first, run(reference))
    assert np.array_equal(run(pruned), run(reference))  # state carried into the second batch
    reset(pruned)
    reset(reference)
    assert np.array_equal(run(pruned), first)  # and reset as for the unwrapped layer


# -- 3. Schedules that cannot reach the target ------------------------------------------------------------------


def test_schedule_whose_frequency_exceeds_its_span_is_refused():
    with pytest.raises(ValueError, match=r"Argument `frequency` must be at most end_step - begin_step = 100: .*"
                                         r"never reach final_sparsity=0.8. Received: frequency=200"):
        ke.ExpanderPruningSchedule(final_sparsity=0.8, begin_step=0, end_step=100, frequency=200)
    ke.ExpanderPruningSchedule(final_sparsity=0.8, begin_step=0, end_step=100, frequency=200,
                               base="constant_sparsity")  # prunes to the target at begin_step: nothing to refuse


def test_schedule_whose_end_step_is_no_pruning_step_warns_with_the_sparsity_reached():
    with pytest.warns(UnreachedSparsityWarning, match=r"end_step - begin_step = 95 is not a multiple of frequency=10, "
                                                      r"so the last pruning step is 95, where the sparsity is "
                                                      r"0\.7579, not final_sparsity=0.8\. Set end_step=105") as caught:
        ke.ExpanderPruningSchedule(final_sparsity=0.8, begin_step=5, end_step=100, frequency=10, power=1.0)
    assert caught[0].filename == __file__  # points at the user's line
    with pytest.warns(UnreachedSparsityWarning):
        short = schedule(end_step=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreachedSparsityWarning)
        ke.prune_expander(lstm_model(), short)  # warned once at construction, not again per layer copy


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("flavour", KERASES)
def test_pruning_steps_are_optimizer_steps_under_steps_per_execution(flavour):
    K = KERASES[flavour]
    if K is keras and keras.backend.backend() == "torch":
        pytest.skip("Keras' PyTorch trainer runs one step per execution (steps_per_execution must be 1)")
    x, y = data(64)  # 4 batches per epoch: executions of 3 + 1 steps
    pruned = ke.prune_expander(lstm_model(K), schedule(end_step=8, frequency=2))
    pruned.compile("adam", K.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=3)
    callback = ke.ExpanderPruningCallback()
    history = pruned.fit(x, y, batch_size=16, epochs=2, callbacks=[callback], verbose=0)
    assert [event.step for event in callback.events] == [2, 4, 6, 8]
    assert history.history["sparsity/lstm"][-1] == pytest.approx(0.5, abs=0.01)
    wrapper = pruned.layers[0]
    assert int(np.asarray(wrapper.pruning_step)) == int(np.asarray(pruned.optimizer.iterations)) == 8


# -- 5. Crashes without a reason --------------------------------------------------------------------------------


@pytest.mark.parametrize("settings,says", [
    (dict(use_bias=False), "use_bias=False"), (dict(activation="relu"), "activation='relu'"),
    (dict(recurrent_activation="hard_sigmoid"), "recurrent_activation='hard_sigmoid'")])
def test_int8_export_of_an_lstm_that_is_not_the_fused_op_is_refused_before_converting(settings, says, tmp_path):
    x, y = data(8)
    model = lstm_model(**settings)
    with pytest.raises(ValueError, match=f"Layer 'lstm': an LSTM with {says} is not the fused .* WHILE loop, whose "
                                         f"int8 conversion crashes"):
        export.export_model(model, modes=("float32", "int8"), x_test=x, y_test=y, representative_data=x,
                            out_dir=tmp_path / "out")  # refused before the float32 conversion: no work lost
    assert not (tmp_path / "out").exists()  # float32 alone exports: test_float_flatbuffer_that_computes_...


def test_lstm_with_recurrent_dropout_exports_in_int8_as_the_fused_op():
    x, _ = data(16)
    model = lstm_model(recurrent_dropout=0.2, dropout=0.1)  # dropout plays no part in inference
    content, _ = export.convert(model, "int8", x, target="litert")
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in project.model_ops(content)


def test_text_model_with_integer_inputs_exports_in_float32_and_refuses_int8(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(20, 4, name="embedding"),
                              keras.layers.LSTM(8), keras.layers.Dense(3)])
    tokens, y = np.random.default_rng(0).integers(0, 20, (8, STEPS)), np.arange(8) % 3
    [report] = export.export_model(model, modes=("float32",), x_test=tokens, y_test=y, out_dir=tmp_path / "float",
                                   target="litert")
    assert report.argmax_agreement_litert_keras == 1.0
    with pytest.raises(ValueError, match=r"Layer 'embedding' \(Embedding\): its inputs are token ids"):
        export.export_model(model, modes=("int8",), x_test=tokens, y_test=y, representative_data=tokens,
                            out_dir=tmp_path / "int8")
    masked = tf_keras.Sequential([tf_keras.Input((STEPS, FEATURES)), tf_keras.layers.Masking(name="padding"),
                                  tf_keras.layers.LSTM(8), tf_keras.layers.Dense(3)])
    x, y = data(8)
    with pytest.raises(ValueError, match=r"Layer 'padding' \(Masking\): masked sequences .*no REDUCE_ANY kernel"):
        export.export_model(masked, modes=("float32",), x_test=x, y_test=y, out_dir=tmp_path / "masked")


def time_distributed_head():
    return tf_keras.Sequential([tf_keras.Input((STEPS, FEATURES)), tf_keras.layers.LSTM(8, return_sequences=True),
                                tf_keras.layers.TimeDistributed(tf_keras.layers.Dense(3), name="per_step")])


def two_inputs():
    sequence, side = tf_keras.Input((STEPS, FEATURES)), tf_keras.Input((4,))
    joined = tf_keras.layers.Concatenate()([tf_keras.layers.LSTM(8)(sequence), side])
    return tf_keras.Model([sequence, side], tf_keras.layers.Dense(3)(joined), name="two_inputs")


def two_outputs():
    sequence = tf_keras.Input((STEPS, FEATURES))
    hidden = tf_keras.layers.LSTM(8)(sequence)
    return tf_keras.Model(sequence, [tf_keras.layers.Dense(3)(hidden), tf_keras.layers.Dense(2)(hidden)],
                          name="two_outputs")


@pytest.mark.parametrize("build,says", [
    (time_distributed_head, r"outputs shape \(None, 6, 3\) \(layer 'per_step', TimeDistributed\)"),
    (two_inputs, "Model 'two_inputs' has 2 inputs; export supports one input and one output"),
    (two_outputs, "Model 'two_outputs' has 2 outputs; export supports one input and one output"),
], ids=["time_distributed_head", "two_inputs", "two_outputs"])
def test_models_the_export_cannot_verify_are_refused_saying_what_is_unsupported(build, says, tmp_path):
    x, y = data(8)
    with pytest.raises(ValueError, match=says):
        export.export_model(build(), modes=("float32",), x_test=x, y_test=y, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_already_pruned_model_is_refused_saying_so():
    from keras_expander.frameworks import tfmot

    for model in (ke.prune_expander(lstm_model(), schedule()),
                  tfmot.sparsity.keras.prune_low_magnitude(lstm_model())):
        with pytest.raises(ValueError, match=r"is already pruned: layer\(s\) 'prune_.*lstm' .*strip_pruning"):
            ke.prune_expander(model, schedule())


# -- 6. Noise ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", KERASES)
def test_pruning_lines_start_their_own_line_after_the_progress_bar(flavour, capsys):
    K = KERASES[flavour]
    x, y = data(64)
    pruned = ke.prune_expander(lstm_model(K), schedule())
    pruned.compile("adam", K.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=1, callbacks=[ke.ExpanderPruningCallback(verbose=1)], verbose=1)
    lines = capsys.readouterr().out.split("\n")  # captured: stdout is no terminal, as in a log file
    pruning = [line for line in lines if "lstm sparsity" in line]
    assert len(pruning) == 2 and all(line.startswith("step ") for line in pruning), pruning


def test_warnings_during_fit_point_at_the_users_line():
    x, y = data(32)
    pruned = ke.prune_expander(lstm_model(), schedule(end_step=400))
    pruned.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(UserWarning, match="before the schedule's end_step 400") as caught:
        pruned.fit(x, y, batch_size=16, epochs=1, callbacks=[ke.ExpanderPruningCallback()], verbose=0)
    assert {w.filename for w in caught if "end_step 400" in str(w.message)} == {__file__}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_repeated_fits_do_not_retrace_the_schedule():
    x, y = data(32)
    pruned = ke.prune_expander(lstm_model(), schedule(end_step=40, stop_rule="monitor"))
    pruned.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        for _ in range(6):  # TensorFlow warns from the fifth retrace on
            pruned.fit(x, y, batch_size=16, epochs=1, callbacks=[ke.ExpanderPruningCallback()], verbose=0)
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert not [message for message in seen if "retracing" in message]
