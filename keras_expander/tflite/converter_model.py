"""The tf_keras copy of a stripped model that the TFLite converter gets: batch size 1, same weights, fused-op layers.

The TFLite converter fuses an LSTM into `UNIDIRECTIONAL_SEQUENCE_LSTM` only for tf_keras' LSTM layer (its
implementation carries the `api_implements` attribute the converter matches); a Keras 3 LSTM, or `RNN(LSTMCell)`
in either Keras, becomes a WHILE loop, which TFLite Micro's sparse kernels cannot use and the int8 calibrator
crashes on (docs/stack.md). The weight layouts are the same in both Kerases, so the export rebuilds
every model as tf_keras from its config:
- a Keras 3 config is rewritten into tf_keras' (dtype policies as names, `batch_shape` as `batch_input_shape`,
  Keras 3-only arguments dropped, functional graph nodes in tf_keras' format);
- `RNN` over one LSTMCell, GRUCell or SimpleRNNCell becomes the LSTM, GRU or SimpleRNN layer it is equivalent to;
- the batch size becomes 1 (only a fixed batch size converts), and the chosen layer classes are unrolled;
then the weights are copied layer by layer. Initializers, regularizers and constraints are dropped: they play no
part in inference and their Keras 3 configs do not deserialize in tf_keras. Dropout rates are set to 0, which is
what inference computes anyway, and lets an LSTM with `recurrent_dropout` reach the fused op.

Every other Keras 3 setting is either carried over exactly or refused, naming the layer and the setting (a copy
that computes something else would pass verification only by luck):
- activations by name, only those in `EXACT_ACTIVATIONS` (tf_keras' function of the same name gives the same
  values; tf_keras' hard_sigmoid, for one, is clip(0.2 x + 0.5, 0, 1), Keras 3's relu6(x + 3) / 6);
- float dtype policies by name (quantized Keras 3 policies have no tf_keras counterpart);
- Keras 3 arguments tf_keras lacks: dropped when they play no part in inference (`INFERENCE_ONLY_ARGUMENTS`) or
  hold their Keras 3 default (the feature is off, e.g. `lora_rank=None`), refused otherwise.
"""

from __future__ import annotations

import inspect

from keras_expander.frameworks import keras_flavour

CELL_LAYERS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
# Arguments every tf_keras layer accepts through **kwargs (tf_keras/src/engine/base_layer.py).
BASE_LAYER_ARGUMENTS = {"name", "trainable", "dtype", "batch_input_shape", "input_shape", "batch_size"}
TRAINING_ONLY = ("_initializer", "_regularizer", "_constraint")
NESTED_LAYERS = ("layer", "backward_layer", "cell")
# Keras 3 activation names whose tf_keras function of the same name computes the same values
# (tests/test_no_silent_wrong_results.py compares every one on a grid). Others are refused.
EXACT_ACTIVATIONS = frozenset({"elu", "exponential", "gelu", "leaky_relu", "linear", "log_softmax", "mish", "relu",
                               "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "softsign", "swish", "tanh"})
ACTIVATION_ARGUMENTS = ("activation", "recurrent_activation")
# Keras 3 arguments without a tf_keras counterpart that play no part in inference: the dropout seed and the choice
# of the cuDNN kernel (same math).
INFERENCE_ONLY_ARGUMENTS = frozenset({"seed", "use_cudnn"})
# Arguments tf_keras' recurrent layers take through **kwargs (tf_keras/src/layers/rnn/base_rnn.py).
RNN_KWARGS = frozenset({"zero_output_for_mask"})
RNN_LAYERS = frozenset({"RNN", "LSTM", "GRU", "SimpleRNN"})
# Defaults of Keras 3-only arguments that Keras 3 pops from **kwargs instead of naming them in the signature.
KERAS3_KWARG_DEFAULTS = {"rms_scaling": False}
DROPOUT_ARGUMENTS = ("dropout", "recurrent_dropout")
_NO_DEFAULT = object()


def _tf_keras_arguments(class_name: str) -> set[str] | None:
    """Arguments a tf_keras layer class accepts, or None when tf_keras has no such layer."""
    from keras_expander.frameworks import tf_keras

    klass = getattr(tf_keras.layers, class_name, None)
    if klass is None:
        return None
    return set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"} | BASE_LAYER_ARGUMENTS


def _keras3_default(class_name: str, argument: str):
    """The default of a Keras 3 layer argument (searched along the class's bases), or `_NO_DEFAULT`."""
    import keras

    for klass in getattr(getattr(keras.layers, class_name, None), "__mro__", ()):
        parameter = inspect.signature(klass.__init__).parameters.get(argument) if "__init__" in vars(klass) else None
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return KERAS3_KWARG_DEFAULTS.get(argument, _NO_DEFAULT)


def _exact_keras3_settings(class_name: str, config: dict, allowed: set[str]) -> dict:
    """The Keras 3 settings of one layer that tf_keras reproduces exactly; refuses the others.

    Raises:
        ValueError: naming the layer, the setting and its value, for an activation outside `EXACT_ACTIVATIONS`, a
            non-float dtype policy, or a Keras 3-only argument away from its default.
    """
    name = config.get("name")
    for key in ACTIVATION_ARGUMENTS:
        if key in config and config[key] not in EXACT_ACTIVATIONS:
            detail = (" (tf_keras' hard_sigmoid is clip(0.2 x + 0.5, 0, 1), Keras 3's relu6(x + 3) / 6)"
                      if config[key] == "hard_sigmoid" else "")
            raise ValueError(f"Layer {name!r}: {key}={config[key]!r} has no exact tf_keras counterpart{detail}, and "
                             f"the TFLite converter gets a tf_keras copy, so the export would change the model. "
                             f"Train with one of {sorted(EXACT_ACTIVATIONS)} ('sigmoid' and 'tanh' for the fused "
                             f"LSTM).")
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        if dtype.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy"):
            settings = ", ".join(f"{key}={value!r}" for key, value in dtype.get("config", {}).items())
            raise ValueError(f"Layer {name!r}: dtype policy {dtype.get('class_name')}({settings}) has no tf_keras "
                             f"counterpart, so the export would change the model. Export the float model (before "
                             f"model.quantize()).")
        config["dtype"] = dtype["config"]["name"]
    kept = {}
    for key, value in config.items():
        if key in allowed or key in NESTED_LAYERS or (class_name in RNN_LAYERS and key in RNN_KWARGS):
            kept[key] = value
        elif key not in INFERENCE_ONLY_ARGUMENTS and value != _keras3_default(class_name, key):
            raise ValueError(f"Layer {name!r} ({class_name}): the Keras 3 setting {key}={value!r} has no tf_keras "
                             f"counterpart, so the TFLite converter's tf_keras copy would compute something else. "
                             f"Export a model without it (e.g. merge LoRA weights, or export before quantizing).")
    return kept


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
        allowed = _tf_keras_arguments(class_name)
        if class_name in ("Sequential", "Functional", "Model"):
            raise ValueError(f"Layer {config.get('name')!r} is a nested Keras 3 model, which the tf_keras copy for the "
                             f"TFLite converter does not rebuild: flatten the model (build it from the layers of "
                             f"{config.get('name')!r} directly; the weights are the same), or export it from "
                             f"tf_keras, where nested models convert as they are.")
        if allowed is None:
            raise ValueError(f"Layer {config.get('name')!r}: tf_keras has no {class_name} layer, so this Keras 3 "
                             f"model cannot be rebuilt for the TFLite converter. The layers and settings export "
                             f"supports: docs/stack.md (Keras 3 models in the TFLite converter).")
        config = _exact_keras3_settings(class_name, config, allowed)
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


def _without_dropout(layer: dict) -> None:
    """Dropout rates set to 0, as inference computes them: an LSTM with recurrent_dropout > 0 is fused then."""
    config = layer["config"]
    for key in DROPOUT_ARGUMENTS:
        if key in config:
            config[key] = 0.0
    for key in NESTED_LAYERS:
        if isinstance(config.get(key), dict):
            _without_dropout(config[key])


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
        ValueError: a layer tf_keras does not have, a Keras 3 setting tf_keras cannot reproduce exactly (see the
            module docstring), or a model that is neither Sequential nor functional.
    """
    from keras_expander.frameworks import tf_keras

    keras3 = keras_flavour(model) == "keras3"
    config = model.get_config()
    layers = [_layer_config(layer, keras3) for layer in config["layers"]]
    for layer in layers:
        _without_dropout(layer)
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
