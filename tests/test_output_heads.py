"""Outputs read as labels the way Keras' accuracy metrics read them, in every check that measures accuracy:
the stop rule's held-out accuracy, the export's verification and the firmware's accuracy (keras_expander.predictions).
A single sigmoid or logit output is thresholded (an argmax over one value is constant); heads and labels no rule
can read are refused at the start. Also: a model whose TFLite Micro arena exceeds 1 MiB runs as firmware."""

import numpy as np
import pytest

import keras_expander as ke
from keras_expander.firmware import deploy, project
from keras_expander.frameworks import tf_keras
from keras_expander.predictions import flatbuffer_reading
from keras_expander.runtime import TFLiteModel
from keras_expander.tflite import export

STEPS, FEATURES = 6, 5
HEADS = {"sigmoid": (dict(activation="sigmoid"), 0.5), "logit": ({}, 0.0)}


def binary_model(head: str, steps: int = STEPS, features: int = FEATURES):
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([tf_keras.Input((steps, features)), tf_keras.layers.LSTM(8, name="lstm"),
                                tf_keras.layers.Dense(1, name="head", **HEADS[head][0])])


def labelled_by_the_model(model, head: str, n: int = 128, seed: int = 0):
    """Sequences and the labels the model itself predicts (its accuracy on them is 1 by construction), with both
    classes present."""
    x = np.random.default_rng(seed).normal(size=(n,) + tuple(model.input_shape[1:])).astype("float32")
    y = (model.predict(x, verbose=0)[:, 0] > HEADS[head][1]).astype("int64")
    assert 0.1 < y.mean() < 0.9, y.mean()
    return x, y


def pruned_fit(model, holdout, loss):
    schedule = ke.ExpanderPruningSchedule(final_sparsity=0.5, begin_step=0, end_step=4, frequency=1)
    pruned = ke.prune_expander(model, schedule)
    pruned.compile(tf_keras.optimizers.SGD(learning_rate=0.0), loss)  # weights change only by the masks
    callback = ke.ExpanderPruningCallback(holdout=holdout)
    x = np.zeros((64,) + tuple(model.input_shape[1:]), "float32")
    y = np.zeros((64,) + tuple(np.shape(holdout[1])[1:]), "float32")
    pruned.fit(x, y, batch_size=16, epochs=1, callbacks=[callback], verbose=0)
    return callback


@pytest.mark.parametrize("head", sorted(HEADS))
def test_holdout_accuracy_thresholds_a_single_output_as_keras_binary_accuracy(head):
    model = binary_model(head)
    x, y = labelled_by_the_model(model, head)
    callback = pruned_fit(model, (x, y), tf_keras.losses.BinaryCrossentropy(from_logits=head == "logit"))
    # The first measurement is of the dense model, which predicts exactly these labels; an argmax over one output
    # gave the share of label 0 at every step, so the rule never paused. Without training (learning rate 0),
    # pruning costs accuracy that nothing recovers: the rule pauses.
    accuracies = [event.holdout_accuracy for event in callback.events]
    assert accuracies[0] == 1.0 and min(accuracies) < 0.99, accuracies
    assert any(event.paused for event in callback.events)


@pytest.mark.parametrize("head,labels,message", [
    (tf_keras.layers.Dense(1, activation="tanh"), np.array([0, 1] * 8), "single output"),
    (tf_keras.layers.Dense(1, activation="softmax"), np.array([0, 1] * 8), "softmax over one unit, which is always 1"),
    (tf_keras.layers.Dense(3, activation="sigmoid"), np.array([[1, 1, 0], [0, 1, 1]] * 8), "multi-label"),
    (tf_keras.layers.Dense(3), np.array([0, 1, 2, 3] * 4), r"class indices in 0 \.\. 2.*values \[3\]"),
], ids=["tanh", "softmax-over-one", "multi-label", "label-outside-the-classes"])
def test_heads_and_labels_the_holdout_accuracy_cannot_read_are_refused_at_the_start_of_fit(head, labels, message):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((STEPS, FEATURES)), tf_keras.layers.LSTM(8), head])
    x = np.zeros((len(labels), STEPS, FEATURES), "float32")
    with pytest.raises(ValueError, match=message):
        pruned_fit(model, (x, labels), "mse")


def test_int8_export_of_a_binary_head_is_verified_by_thresholds_and_fails_when_miscalibrated(tmp_path):
    model = binary_model("sigmoid")
    x, y = labelled_by_the_model(model, "sigmoid", n=256)
    report, = export.export_model(model, ["int8"], x, y, representative_data=x, out_dir=str(tmp_path / "good"),
                                  target="litert")
    assert report.decision == "sigmoid output > 0.5" and report.keras_accuracy == 1.0
    assert report.argmax_agreement_litert_keras >= export.MIN_AGREEMENT
    content = (tmp_path / "good" / "int8.tflite").read_bytes()
    reading = flatbuffer_reading(project.output_op(content), 1)
    assert project.output_op(content) == "LOGISTIC" and reading.threshold == 0.5
    assert reading.accuracy(TFLiteModel(content).predict(x), y) == report.litert_accuracy
    # Calibrated on inputs 100x too large, the int8 input step is about 2.4: nearly every input becomes 0 and the
    # int8 model answers one class. An argmax over the single output agreed with Keras on 100 % of the sequences.
    with pytest.raises(export.ExportError, match=r"LiteRT and Keras predict the same class on [1-8]\d\.\d %"):
        export.export_model(model, ["int8"], x, y, representative_data=100 * x, out_dir=str(tmp_path / "bad"),
                            target="litert")
    assert not (tmp_path / "bad").exists()


def test_firmware_runs_a_model_whose_arena_exceeds_a_mebibyte_and_thresholds_its_single_output(tmp_path):
    # 400 steps of 700 float32 features: a 1.1 MB input tensor, more than the 1 MiB the reference interpreter had.
    model = binary_model("sigmoid", steps=400, features=700)
    x, y = labelled_by_the_model(model, "sigmoid", n=16)
    report, = export.export_model(model, ["float32"], x, y, out_dir=str(tmp_path / "export"))
    assert report.arena_bytes > 1 << 20
    content = (tmp_path / "export" / "float32.tflite").read_bytes()
    firmware = deploy.deploy(content, x[:4], y[:4], target="host", out_dir=tmp_path / "firmware")
    assert firmware.bitexact_vs_tflm_python and firmware.accuracy == 1.0


@pytest.mark.slow
def test_firmware_of_an_int8_gru_over_400_steps_runs_from_the_command_line(tmp_path):
    # The case: the unrolled int8 GRU needs a 1.4 MB arena; `firmware` died with "TFLM failed to allocate".
    from keras_expander import cli

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((400, 8)), tf_keras.layers.GRU(16), tf_keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(size=(16, 400, 8)).astype("float32")
    y = model.predict(x, verbose=0).argmax(axis=1)
    report, = export.export_model(model, ["int8"], x, y, representative_data=x, out_dir=str(tmp_path / "export"))
    assert report.arena_bytes > 1 << 20
    np.savez(tmp_path / "test.npz", x_test=x[:4], y_test=y[:4])
    assert cli.main(["firmware", str(tmp_path / "export" / "int8.tflite"), "--target", "host", "--data",
                     str(tmp_path / "test.npz"), "--out", str(tmp_path / "firmware")]) == 0


def test_a_model_with_two_outputs_is_refused_by_the_holdout_accuracy():
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((STEPS, FEATURES))
    hidden = tf_keras.layers.LSTM(8)(inputs)
    model = tf_keras.Model(inputs, [tf_keras.layers.Dense(3)(hidden), tf_keras.layers.Dense(1)(hidden)])
    labels = np.array([0, 1, 2] * 4)
    with pytest.raises(ValueError, match="has 2 outputs; accuracy reads one classifier output"):
        pruned_fit(model, (np.zeros((len(labels), STEPS, FEATURES), "float32"), labels), "mse")
