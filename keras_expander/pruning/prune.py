"""`prune_expander`, `strip_pruning` and `load_model` for tf_keras and Keras 3 models, dispatched on the model type.

A tf_keras model is wrapped with `keras_expander.pruning.tf_keras_wrapper.PruneExpander` (tfmot's wrapper; tfmot is
imported then and only then), a Keras 3 model with `keras_expander.pruning.keras3_wrapper.PruneExpander` (masks applied
as the wrapped layer reads its matrices, on every Keras 3 backend). Both wrappers follow
`keras_expander.pruning.wrapper`'s contract, and `ExpanderPruningCallback` drives either. The wrapper modules are
imported by name (`IMPLEMENTATIONS`) so that only the Keras in use is loaded; they import this module's contract, never
this dispatcher.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
import zipfile

import numpy as np

from keras_expander import layers as layers_lib
from keras_expander.frameworks import keras_flavour
from keras_expander.pruning.schedule import ExpanderPruningSchedule
from keras_expander.pruning.wrapper import is_graph_model, is_model, pruning_wrappers, value

IMPLEMENTATIONS = {"tf_keras": "keras_expander.pruning.tf_keras_wrapper",
                   "keras3": "keras_expander.pruning.keras3_wrapper"}
# clone_model, which wrapping and stripping need, rebuilds only Sequential and functional models; a functional model
# made by calling the subclassed model's `call` on an Input holds the same layers, so it prunes, strips and exports.
SUBCLASSED = ("Argument `{argument}` of {function} must be a Sequential or functional model; subclassed model "
              "{name!r} ({kind}) cannot be cloned. Pass a functional model of its layers instead (it shares their "
              "weights, and strip_pruning and export work on it): inputs = keras.Input((timesteps, features)); "
              "model = keras.Model(inputs, model.call(inputs)).")

def implementation(model_or_layer):
    """The module that prunes this object: `tf_keras_wrapper` (tfmot) or `keras3_wrapper`.

    Raises:
        TypeError: `model_or_layer` is not a Keras 3 or tf_keras model or layer.
    """
    try:
        flavour = keras_flavour(model_or_layer)
    except TypeError:
        raise TypeError(f"Argument `model_or_layer` must be a Keras 3 or tf_keras Model or Layer. Received: "
                        f"{type(model_or_layer)!r}") from None
    return importlib.import_module(IMPLEMENTATIONS[flavour])


def model_layers(model) -> list:
    """The layers of a Sequential or functional model, each nested Sequential or functional model followed by its
    own layers (recursively), in model order."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if is_graph_model(layer):
            found.extend(model_layers(layer))
    return found


def _check_no_subclassed_rnn(model, layers: list) -> None:
    """Refuses a subclassed model nested in `model` that holds recurrent layers: `clone_model` cannot reach them."""
    for nested in layers:
        if not is_model(nested) or is_graph_model(nested):
            continue
        inner = [layer.name for layer in nested._flatten_layers(include_self=False, recursive=True)
                 if layers_lib.is_recurrent(layer)]
        if inner:
            raise TypeError(f"Model {model.name!r} holds subclassed model {nested.name!r} "
                            f"({type(nested).__name__}), which cannot be cloned, so its recurrent layers {inner} "
                            f"cannot be wrapped. Flatten the model: build {model.name!r} from the layers of "
                            f"{nested.name!r} directly.")


def _selected(layer, layers) -> bool:
    if layers is None:
        return layers_lib.is_recurrent(layer)
    return layer.name in layers


def prune_expander(model_or_layer, pruning_schedule: ExpanderPruningSchedule,
                   mask_policy: str = "degree_floor_magnitude", min_degree: int = 1, seed: int = 0, layers=None,
                   allocation: str = "uniform"):
    """Wraps the recurrent layers of a tf_keras or Keras 3 model (or one layer) for expansion-aware pruning.

    Like tfmot's `prune_low_magnitude`, but only recurrent layers (SimpleRNN, LSTM, GRU, RNN over their cells,
    Bidirectional) are wrapped by default (Dense and the rest are left alone unless named in `layers`). Wrapped
    layers keep their weights. tf_keras objects get tfmot's wrapper (`keras_expander.pruning.tf_keras_wrapper`), Keras 3
    objects our own (`keras_expander.pruning.keras3_wrapper`, any backend).

    Args:
        model_or_layer: A tf_keras or Keras 3 Sequential or functional model (the Sequential and functional models
            nested in it are searched too), or a single layer.
        pruning_schedule: An `ExpanderPruningSchedule`; every wrapped layer gets its own copy.
        mask_policy: One of `keras_expander.MASK_POLICIES` (default "degree_floor_magnitude").
        min_degree: Degree floor of "degree_floor_magnitude", >= 1.
        seed: Seed of the random policies (each layer adds its position in the model).
        layers: Names of the layers to wrap; None wraps every supported recurrent layer.
        allocation: How each layer's non-zeros are split between its graphs (per gate and matrix): "uniform"
            (default: every graph at the schedule's sparsity), "erk" (Erdos-Renyi, Mocanu et al. 2018) or
            "expansion" (equal Ramanujan gap ratios); `keras_expander.ALLOCATIONS`, formulas in
            keras_expander.pruning.allocation. Every policy keeps the same non-zeros per layer.

    Returns:
        A new model of the same Keras sharing the original layers (wrapped where selected), or a `PruneExpander`
        for a layer.

    Raises:
        TypeError: a selected layer is not supported (ConvLSTM, RNN over a list of cells, ...), the object is not a
            Keras model or layer, the model is subclassed (the message shows how to make a functional model of its
            layers) or holds a subclassed model with recurrent layers, or `layers` is a string.
        ValueError: the model is not built, a name in `layers` is not in the model, the model is already pruned,
            nothing would be wrapped, or `mask_policy` / `allocation` is unknown (or the allocation is not
            "uniform" under mask_policy "magnitude", which ranks the whole matrix).

    Warns:
        UserWarning: naming each recurrent layer left dense (ConvLSTM, stacked cells) when `layers` is None.
    """
    impl = implementation(model_or_layer)
    options = dict(pruning_schedule=pruning_schedule, mask_policy=mask_policy, min_degree=min_degree,
                   allocation=allocation)
    if not is_model(model_or_layer):
        return impl.PruneExpander(model_or_layer, seed=seed, **options)
    model = model_or_layer
    if not is_graph_model(model):
        raise TypeError(SUBCLASSED.format(argument="model_or_layer", function="prune_expander", name=model.name,
                                          kind=type(model).__name__))
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built, so its weights do not exist yet: give it an Input "
                         f"(e.g. keras.Input((timesteps, features))) or call model.build(input_shape) before "
                         f"prune_expander.")
    if isinstance(layers, str):
        raise TypeError(f"Argument `layers` must be a list of layer names, not a string. Received: "
                        f"layers={layers!r}; pass layers=[{layers!r}].")
    all_layers = model_layers(model)
    _check_no_subclassed_rnn(model, all_layers)
    if layers is not None:
        layers = set(layers)
        missing = layers - {layer.name for layer in all_layers}
        if missing:
            raise ValueError(f"Argument `layers` names layers not in the model: {sorted(missing)}.")
    positions = {id(layer): index for index, layer in enumerate(all_layers)}
    wrapped = []

    def clone_function(layer):
        if is_graph_model(layer):  # a nested model: its own layers get wrapped (tfmot's prune_low_magnitude too)
            return impl.clone_with(layer, clone_function)
        if layers_lib.is_pruning_wrapper(layer) or not _selected(layer, layers):
            return layer
        wrapped.append(layer.name)
        return impl.PruneExpander(layer, seed=seed + positions.get(id(layer), 0), **options)

    already = [f"{layer.name!r} ({type(layer).__name__})" for layer in all_layers
               if layers_lib.is_pruning_wrapper(layer)]
    if already and not any(_selected(layer, layers) for layer in all_layers
                           if not layers_lib.is_pruning_wrapper(layer)):
        raise ValueError(f"Model {model.name!r} is already pruned: layer(s) {', '.join(already)} are pruning "
                         f"wrappers. Keep training it with ExpanderPruningCallback, or call "
                         f"keras_expander.strip_pruning(model) first and prune the stripped model.")
    pruned = impl.clone_with(model, clone_function)
    if not wrapped:
        raise ValueError(f"Model {model.name!r} has no SimpleRNN, LSTM, GRU or Bidirectional layer to prune "
                         f"(layers: {[type(layer).__name__ for layer in all_layers]}).")
    left_dense = [f"{layer.name!r} ({type(layer).__name__}: {layers_lib.unsupported_reason(layer)})"
                  for layer in all_layers if layers_lib.recurrent_cells(layer) and not layers_lib.is_recurrent(layer)
                  or type(layer).__name__.startswith("ConvLSTM")]
    if left_dense:
        warnings.warn(f"prune_expander left these recurrent layers dense: {'; '.join(left_dense)}.", stacklevel=2)
    return pruned


def strip_pruning(model):
    """Removes pruning wrappers after baking the masks into the weights, and checks it.

    tf_keras models go through tfmot's `strip_pruning`; Keras 3 models are cloned without their wrappers.

    Args:
        model: A tf_keras or Keras 3 Sequential or functional model with `PruneExpander` (or, tf_keras only, tfmot
            `PruneLowMagnitude`) layers, in it or in the Sequential and functional models nested in it.

    Returns:
        The stripped model (plain layers sharing the trained weights), whose prunable weights are exactly zero
        wherever the masks were zero.

    Raises:
        TypeError: `model` is not a Keras model, or is subclassed (the message shows how to make a functional model
            of its layers, which strips).
        RuntimeError: a stripped weight is non-zero where its mask was zero (never expected; would mean the
            export carries pruned weights).
    """
    impl = implementation(model)
    if not is_graph_model(model):
        raise TypeError(SUBCLASSED.format(argument="model", function="strip_pruning", name=model.name,
                                          kind=type(model).__name__))
    expected = [(entry[0], value(entry[1]) == 0) for wrapper in pruning_wrappers(model)
                for entry in wrapper.pruning_vars]
    stripped = impl.strip(model)
    for weight, zero in expected:
        leaked = int(np.count_nonzero(value(weight)[zero]))
        if leaked:
            raise RuntimeError(f"strip_pruning: {leaked} masked entries of {weight.name} are non-zero after baking "
                               f"the masks in.")
    return stripped


def saved_keras_version(path: str) -> str | None:
    """The Keras version recorded in a `.keras` archive's metadata.json (e.g. "3.15.1" or "2.21.0"), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (KeyError, ValueError):
        return None


def load_model(path: str | os.PathLike):
    """Loads a tf_keras or Keras 3 model (`.keras` file, or tf_keras SavedModel folder) that may hold pruning wrappers.

    A `.keras` file is loaded by the Keras that wrote it (its metadata.json); both `PruneExpander` wrappers and
    `ExpanderPruningSchedule` are registered, and tfmot's own wrappers load through
    `tfmot.sparsity.keras.prune_scope()`.

    Args:
        path: File or folder to load.

    Returns:
        The model (tf_keras, or Keras 3 for Keras 3 files).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a `.keras` file that is not a zip archive (corrupt), an `.h5` file of a pruned
            recurrent model, or the model cannot be loaded (the message names the error).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Argument `path`: no model at {path!r}.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"Argument `path`: {path!r} is not a Keras .keras archive (a .keras file is a zip file); it "
                         f"is corrupt or truncated, or another format: save the model again.")
    version = saved_keras_version(path) if path.endswith(".keras") else None
    flavour = "keras3" if version and version.startswith("3.") else "tf_keras"
    try:
        return importlib.import_module(IMPLEMENTATIONS[flavour]).load(path)
    except Exception as error:
        raise ValueError(f"Could not load model {path!r} with {flavour} (the file says Keras {version or 'unknown'}): "
                         f"{error}") from error
