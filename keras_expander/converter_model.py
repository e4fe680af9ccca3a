"""The tf_keras copy of a stripped model that the TFLite converter gets: batch size 1, same weights, fused-op layers.

The TFLite converter fuses an LSTM into `UNIDIRECTIONAL_SEQUENCE_LSTM` only for tf_keras' LSTM layer (its
implementation carries the `api_implements` attribute the converter matches); a Keras 3 LSTM, or `RNN(LSTMCell)`
in either Keras, becomes a WHILE loop, which TFLite Micro's sparse kernels cannot use and the int8 calibrator
crashes on (`../shared/docs/STACK.md`). The weight layouts are the same in both Kerases, so the export rebuilds
every model as tf_keras from its config:
- a Keras 3 config is rewritten into tf_keras' (dtype policies as names, `batch_shape` as `batch_input_shape`,
  Keras 3-only arguments dropped, functional graph nodes in tf_keras' format);
- `RNN` over one LSTMCell, GRUCell or SimpleRNNCell becomes the LSTM, GRU or SimpleRNN layer it is equivalent to;
- the batch size becomes 1 (only a fixed batch size converts), and the chosen layer classes are unrolled;
then the weights are copied layer by layer. Initializers, regularizers and constraints are dropped: they play no
part in inference and their Keras 3 configs do not deserialize in tf_keras.
"""

from __future__ import annotations

import inspect

from keras_expander.backend import keras_flavour

CELL_LAYERS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
# Arguments every tf_keras layer accepts through **kwargs (tf_keras/src/engine/base_layer.py).
BASE_LAYER_ARGUMENTS = {"name", "trainable", "dtype", "batch_input_shape", "input_shape", "batch_size"}
TRAINING_ONLY = ("_initializer", "_regularizer", "_constraint")
NESTED_LAYERS = ("layer", "backward_layer", "cell")


def _tf_keras_arguments(class_name: str) -> set[str] | None:
    """Arguments a tf_keras layer class accepts, or None when tf_keras has no such layer."""
    from keras_expander.backend import tf_keras

    klass = getattr(tf_keras.layers, class_name, None)
    if klass is None:
        return None
    return set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"} | BASE_LAYER_ARGUMENTS


def _dtype_name(dtype):
    return dtype["config"]["name"] if isinstance(dtype, dict) else dtype


def _history(tensor: dict) -> list:
    name, node_index, tensor_index = tensor["config"]["keras_history"]
    return [name, node_index, tensor_index, {}]


def _inbound_nodes(nodes: list) -> list:
    """Keras 3 nodes ({"args": [tensor or [tensors]], "kwargs": {}}) in tf_keras' [[name, node, tensor, kwargs]]."""
    converted = []
    for node in nodes:
        [inputs] = node["args"][:1] or [[]]
        tensors = inputs if isinstance(inputs, list) else [inputs]
        converted.append([_history(tensor) for tensor in tensors])
    return converted


def _layer_config(layer: dict, keras3: bool) -> dict:
    """One serialized layer as tf_keras deserializes it (recursing into wrapped layers and cells)."""
    class_name, config = layer["class_name"], dict(layer["config"])
    if keras3:
        if class_name == "InputLayer":
            config["batch_input_shape"] = config.pop("batch_shape")
        config = {key: value for key, value in config.items() if not key.endswith(TRAINING_ONLY)}
        if "dtype" in config:
            config["dtype"] = _dtype_name(config["dtype"])
        allowed = _tf_keras_arguments(class_name)
        if allowed is None:
            raise ValueError(f"Layer {config.get('name')!r}: tf_keras has no {class_name} layer, so this Keras 3 "
                             f"model cannot be rebuilt for the TFLite converter. Export supports the layers of the "
                             f"table in README.md (Keras 3 section).")
        config = {key: value for key, value in config.items() if key in allowed or key in NESTED_LAYERS}
    for key in NESTED_LAYERS:
        if isinstance(config.get(key), dict):
            config[key] = _layer_config(config[key], keras3)
    cell = config.get("cell")
    if class_name == "RNN" and isinstance(cell, dict) and cell["class_name"] in CELL_LAYERS:
        # RNN(LSTMCell) -> LSTM: same weights, and the LSTM layer is the one the converter fuses.
        cell_config = {key: value for key, value in cell["config"].items() if key not in ("name", "dtype")}
        config = {key: value for key, value in config.items() if key != "cell"} | cell_config
        class_name = CELL_LAYERS[cell["class_name"]]
    converted = {"class_name": class_name, "config": config}
    if "inbound_nodes" in layer:
        nodes = layer["inbound_nodes"]
        converted["inbound_nodes"] = _inbound_nodes(nodes) if keras3 else nodes
    if "name" in layer:
        converted["name"] = layer["name"]
    return converted


def _set_batch_and_unroll(layer: dict, unroll: frozenset, unroll_sequences: frozenset) -> None:
    config = layer["config"]
    if "batch_input_shape" in config:
        config["batch_input_shape"] = [1, *config["batch_input_shape"][1:]]
    if layer["class_name"] in unroll or (layer["class_name"] in unroll_sequences and config.get("return_sequences")):
        config["unroll"] = True
    for key in NESTED_LAYERS:
        if isinstance(config.get(key), dict):
            _set_batch_and_unroll(config[key], unroll, unroll_sequences)


def converter_model(model, unroll: frozenset = frozenset(), unroll_sequences: frozenset = frozenset()):
    """A tf_keras copy of a stripped Sequential or functional model, batch size 1, with the same weights.

    Args:
        model: A stripped (unwrapped) tf_keras or Keras 3 Sequential or functional model.
        unroll: Class names of the recurrent layers to unroll ("SimpleRNN", "GRU"): FULLY_CONNECTED and
            elementwise ops per step instead of a WHILE loop, which the int8 calibrator cannot handle.
        unroll_sequences: Class names of the recurrent layers to unroll when they return sequences.

    Returns:
        The rebuilt tf_keras model (new layers, weights copied from the layer of the same name).

    Raises:
        ValueError: a layer tf_keras does not have, or a model that is neither Sequential nor functional.
    """
    from keras_expander.backend import tf_keras

    keras3 = keras_flavour(model) == "keras3"
    config = model.get_config()
    layers = [_layer_config(layer, keras3) for layer in config["layers"]]
    for layer in layers:
        _set_batch_and_unroll(layer, unroll, unroll_sequences)
    sequential = type(model).__name__ == "Sequential"
    if not sequential and "input_layers" not in config:
        raise ValueError(f"Model {model.name!r} of class {type(model).__name__} is neither Sequential nor functional; "
                         f"export rebuilds the model from its config. Rebuild it as a functional model.")
    rebuilt_config = {"name": config.get("name", model.name), "layers": layers}
    if sequential:
        rebuilt = tf_keras.Sequential.from_config(rebuilt_config)
    else:
        # Keras 3 writes a single input or output as one [name, node, tensor] triple, tf_keras always as a list.
        rebuilt_config.update({key: [config[key]] if isinstance(config[key][0], str) else config[key]
                               for key in ("input_layers", "output_layers")})
        rebuilt = tf_keras.Model.from_config(rebuilt_config)
    if not rebuilt.built:
        rebuilt.build((1, *model.input_shape[1:]))
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt
