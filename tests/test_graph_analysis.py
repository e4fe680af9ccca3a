"""Graph views of real Keras layers and model analysis."""

import json

import numpy as np
import pytest

import keras_expander as ke
from keras_expander.expansion import analysis
from keras_expander.expansion import graphs as graph
from keras_expander.frameworks import tf_keras


def built_lstm(units=8, features=5, name="lstm"):
    layer = tf_keras.layers.LSTM(units, name=name)
    layer.build((None, 3, features))
    return layer


def test_lstm_gate_slicing_follows_keras_order():
    layer = built_lstm()
    kernel = layer.cell.kernel.numpy()
    kernel[:, 8:16] = 0.0  # gate f (order i, f, c, o)
    layer.cell.kernel.assign(kernel)
    graphs = {g.name: g for g in graph.layer_graphs(layer)}
    assert graphs["lstm/kernel/f"].mask.sum() == 0
    for gate in "ico":
        assert graphs[f"lstm/kernel/{gate}"].mask.all()
    assert all(graphs[f"lstm/recurrent_kernel/{gate}"].mask.all() for gate in "ifco")
    assert graphs["lstm/kernel/i"].shape == (5, 8) and graphs["lstm/recurrent_kernel/o"].shape == (8, 8)


def test_union_and_stacked_views():
    layer = built_lstm()
    kernel = layer.cell.kernel.numpy()
    kernel[0, :] = 0.0
    kernel[1, 0:8] = 0.0  # row 1 absent from gate i only: still in the union
    layer.cell.kernel.assign(kernel)
    union = graph.layer_graphs(layer, "union")[0]
    stacked = graph.layer_graphs(layer, "stacked")[0]
    assert union.name == "lstm/kernel/union" and union.shape == (5, 8)
    assert not union.mask[0].any() and union.mask[1].all()
    assert stacked.shape == (5, 32) and stacked.mask.sum() == 4 * 32 - 8


def test_simple_rnn_has_one_graph_per_matrix():
    layer = tf_keras.layers.SimpleRNN(6, name="rnn")
    layer.build((None, 4, 3))
    assert [g.name for g in graph.layer_graphs(layer)] == ["rnn/kernel/all", "rnn/recurrent_kernel/all"]


def test_keras3_lstm_is_read():
    import keras

    layer = keras.layers.LSTM(4, name="k3")
    layer.build((None, 2, 3))
    names = [g.name for g in graph.layer_graphs(layer)]
    assert names[0] == "k3/kernel/i" and len(names) == 8


def test_tfmot_wrapper_is_read_from_its_masks_not_from_zero_weights():
    import tensorflow_model_optimization as tfmot

    model = tf_keras.Sequential([tf_keras.Input((3, 5)), tfmot.sparsity.keras.prune_low_magnitude(
        tf_keras.layers.LSTM(8, name="lstm"), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))])
    wrapper = model.layers[0]
    (_, kernel_mask, _), _ = wrapper.pruning_vars
    mask = np.ones((5, 32), dtype=np.float32)
    mask[:, :8] = 0.0  # gate i pruned
    kernel_mask.assign(mask)
    # Masked weights are still non-zero, as right after an optimizer step.
    assert np.count_nonzero(wrapper.layer.cell.kernel.numpy()[:, :8]) > 0
    graphs = {g.name: g for g in graph.layer_graphs(wrapper)}
    assert graphs["lstm/kernel/i"].mask.sum() == 0
    assert np.all(graphs["lstm/kernel/i"].weights == 0)
    assert graphs["lstm/kernel/f"].mask.all()


@pytest.mark.parametrize("layer,match", [
    (tf_keras.layers.Conv1D(4, 3), "Conv1D"),
    (tf_keras.layers.RNN([tf_keras.layers.LSTMCell(4), tf_keras.layers.LSTMCell(4)]), "StackedRNNCells"),
    (tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(4), backward_layer=tf_keras.layers.GRU(4, go_backwards=True)),
     "different cell types"),
])
def test_unsupported_layers_raise_type_error_naming_the_class(layer, match):
    layer.build((None, 5, 3))
    with pytest.raises(TypeError, match=match):
        graph.layer_graphs(layer)


def test_analyze_model_lists_skipped_layers_and_prints_units():
    model = tf_keras.Sequential([tf_keras.Input((6, 5)), tf_keras.layers.LSTM(8, return_sequences=True, name="a"),
                                 tf_keras.layers.GRU(4, return_sequences=True, name="g"),
                                 tf_keras.layers.SimpleRNN(4, name="b"), tf_keras.layers.Dense(3, name="d")])
    report = ke.analyze(model)
    names = [r.name for r in report]
    assert "a/kernel/i" in names and "a/recurrent_kernel/union" in names and "b/recurrent_kernel/all" in names
    assert "g/kernel/z" in names and "g/recurrent_kernel/h" in names
    assert set(report.skipped) == {"d"} and "not a recurrent layer" in report.skipped["d"]
    lines = []
    ke.print_report(report, print_fn=lines.append)
    assert "q (%)" in lines[1] and any(line.startswith("a/kernel/i") for line in lines)
    payload = json.loads(analysis.report_to_json(report))
    assert {layer["layer"] for layer in payload["layers"]} == {"a", "g", "b"}
    summary = {s.layer: s for s in ke.summarize_layers(report)}
    dense_delta_r = np.sqrt(8 - 1) + np.sqrt(5 - 1)  # complete 5 x 8 graph, mu1 = 0
    assert abs(summary["a"].worst_delta_r - dense_delta_r) <= 1e-6


def test_analyze_model_without_recurrent_layer_raises():
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2, name="only")])
    with pytest.raises(ValueError, match="no SimpleRNN, LSTM or GRU"):
        ke.analyze(model)


def test_analyze_raises_on_nan_weights_naming_the_graph():
    layer = built_lstm()
    kernel = layer.cell.kernel.numpy()
    kernel[0, 0] = np.nan
    layer.cell.kernel.assign(kernel)
    with pytest.raises(ValueError, match="lstm/kernel/i"):
        analysis.analyze_layer(layer)
