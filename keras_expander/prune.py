"""`prune_expander`, `strip_pruning` and `load_model` for tf_keras and Keras 3 models, dispatched on the model type.

A tf_keras model is wrapped with `keras_expander.prune_tf_keras.PruneExpander` (tfmot's wrapper; tfmot is imported
then and only then), a Keras 3 model with `keras_expander.prune_keras3.PruneExpander` (masks applied by weight
constraints). Both wrappers have the same arguments, attributes and checks, and `ExpanderPruningCallback` drives
either.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
import zipfile

import numpy as np

from keras_expander import graph as graph_lib
from keras_expander import masks as masks_lib
from keras_expander.backend import keras_flavour
from keras_expander.schedule import ExpanderPruningSchedule

IMPLEMENTATIONS = {"tf_keras": "keras_expander.prune_tf_keras", "keras3": "keras_expander.prune_keras3"}

CALLBACK_MISSING = ("Layer {name!r} is pruned by keras_expander but is training without ExpanderPruningCallback, "
                    "so its masks would never change. Pass keras_expander.ExpanderPruningCallback() in "
                    "model.fit(callbacks=[...]) (it replaces tfmot's UpdatePruningStep).")


def implementation(model_or_layer):
    """The module that prunes this object: `prune_tf_keras` (tfmot) or `prune_keras3`.

    Raises:
        TypeError: `model_or_layer` is not a Keras 3 or tf_keras model or layer.
    """
    try:
        flavour = keras_flavour(model_or_layer)
    except TypeError:
        raise TypeError(f"Argument `model_or_layer` must be a Keras 3 or tf_keras Model or Layer. Received: "
                        f"{type(model_or_layer)!r}") from None
    return importlib.import_module(IMPLEMENTATIONS[flavour])


def check_wrapper_options(layer, pruning_schedule, mask_policy: str, min_degree: int) -> None:
    """The argument checks shared by both `PruneExpander` wrappers.

    Raises:
        TypeError: `pruning_schedule` is not an `ExpanderPruningSchedule`, or the layer is unsupported.
        ValueError: unknown `mask_policy`, or `min_degree` is not an integer >= 1.
    """
    if not isinstance(pruning_schedule, ExpanderPruningSchedule):
        raise TypeError(f"Argument `pruning_schedule` must be an ExpanderPruningSchedule. Received: "
                        f"pruning_schedule={pruning_schedule!r}")
    if mask_policy not in masks_lib.MASK_POLICIES:
        raise ValueError(f"Argument `mask_policy` must be one of {masks_lib.MASK_POLICIES}. Received: "
                         f"mask_policy={mask_policy!r}")
    if isinstance(min_degree, bool) or not isinstance(min_degree, (int, np.integer)) or min_degree < 1:
        raise ValueError(f"Argument `min_degree` must be an integer >= 1. Received: min_degree={min_degree!r}")
    reason = graph_lib.unsupported_reason(layer)
    if reason is not None:
        raise TypeError(f"Layer {layer.name!r} of class {type(layer).__name__} cannot be pruned by "
                        f"keras_expander: {reason}.")


def check_min_degree(wrapper) -> None:
    """Refuses (at build) a degree floor larger than the smallest side of the wrapper's graphs.

    Raises:
        ValueError: naming the layer, the largest allowed value and the value received.
    """
    matrices = graph_lib.layer_matrices(wrapper)
    smallest_side = min(min(m.shape[0], m.shape[1] // len(matrices.gates)) for m in matrices.kernels.values())
    if wrapper.mask_policy == "degree_floor_magnitude" and wrapper.min_degree > smallest_side:
        raise ValueError(f"Argument `min_degree` must be at most {smallest_side} for layer {wrapper.layer.name!r} "
                         f"(its smallest graph side). Received: min_degree={wrapper.min_degree}")


def is_expander(layer) -> bool:
    """True for keras_expander's `PruneExpander` wrappers (tf_keras or Keras 3), False for plain tfmot wrappers."""
    return any(klass.__name__ == "PruneExpander" for klass in type(layer).__mro__)


def pruning_wrappers(model) -> list:
    """Every pruning wrapper in a model, nested models included: `PruneExpander` (both Kerases) and tfmot's
    `PruneLowMagnitude`, in model order."""
    if model is None:
        return []
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if graph_lib.is_pruning_wrapper(layer)]


def value(variable) -> np.ndarray:
    """A tf_keras, Keras 3 or distributed (mirrored) variable's value as a numpy array."""
    return np.asarray(variable.numpy())


def mask_sparsity(wrapper) -> float:
    """Fraction of zeros over all masks of a pruning wrapper (read from its mask variables), in [0, 1]."""
    masks = [value(entry[1]) for entry in wrapper.pruning_vars]
    return 1.0 - sum(int(np.count_nonzero(m)) for m in masks) / sum(m.size for m in masks)


def _selected(layer, layers) -> bool:
    if layers is None:
        return graph_lib.is_recurrent(layer)
    return layer.name in layers


def prune_expander(model_or_layer, pruning_schedule: ExpanderPruningSchedule,
                   mask_policy: str = "degree_floor_magnitude", min_degree: int = 1, seed: int = 0, layers=None):
    """Wraps the recurrent layers of a tf_keras or Keras 3 model (or one layer) for expansion-aware pruning.

    Like tfmot's `prune_low_magnitude`, but only recurrent layers (SimpleRNN, LSTM, GRU, RNN over their cells,
    Bidirectional) are wrapped by default (Dense and the rest are left alone unless named in `layers`). Wrapped
    layers keep their weights. tf_keras objects get tfmot's wrapper (`keras_expander.prune_tf_keras`), Keras 3
    objects a constraint-based one (`keras_expander.prune_keras3`).

    Args:
        model_or_layer: A tf_keras or Keras 3 Sequential or functional model, or a single layer.
        pruning_schedule: An `ExpanderPruningSchedule`; every wrapped layer gets its own copy.
        mask_policy: One of `keras_expander.MASK_POLICIES` (default "degree_floor_magnitude").
        min_degree: Degree floor of "degree_floor_magnitude", >= 1.
        seed: Seed of the random policies (each layer adds its position in the model).
        layers: Names of the layers to wrap; None wraps every supported recurrent layer.

    Returns:
        A new model of the same Keras sharing the original layers (wrapped where selected), or a `PruneExpander`
        for a layer.

    Raises:
        TypeError: a selected layer is not supported (ConvLSTM, RNN over a list of cells, ...), the object is not a
            Keras model or layer, the model is subclassed, or `layers` is a string.
        ValueError: the model is not built, a name in `layers` is not in the model, the model is already pruned, or
            nothing would be wrapped.

    Warns:
        UserWarning: naming each recurrent layer left dense (ConvLSTM, stacked cells) when `layers` is None.
    """
    impl = implementation(model_or_layer)
    options = dict(pruning_schedule=pruning_schedule, mask_policy=mask_policy, min_degree=min_degree)
    classes = {klass.__name__ for klass in type(model_or_layer).__mro__}
    if "Model" not in classes:
        return impl.PruneExpander(model_or_layer, seed=seed, **options)
    model = model_or_layer
    if not ({"Sequential", "Functional"} & classes or getattr(model, "_is_graph_network", False)):
        raise TypeError(f"Argument `model_or_layer` must be a Sequential or functional model; subclassed model "
                        f"{type(model).__name__} cannot be cloned. Wrap its layers with prune_expander.")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built, so its weights do not exist yet: give it an Input "
                         f"(e.g. keras.Input((timesteps, features))) or call model.build(input_shape) before "
                         f"prune_expander.")
    if isinstance(layers, str):
        raise TypeError(f"Argument `layers` must be a list of layer names, not a string. Received: "
                        f"layers={layers!r}; pass layers=[{layers!r}].")
    if layers is not None:
        layers = set(layers)
        missing = layers - {layer.name for layer in model.layers}
        if missing:
            raise ValueError(f"Argument `layers` names layers not in the model: {sorted(missing)}.")
    positions = {id(layer): index for index, layer in enumerate(model.layers)}
    wrapped = []

    def clone_function(layer):
        if graph_lib.is_pruning_wrapper(layer) or not _selected(layer, layers):
            return layer
        wrapped.append(layer.name)
        return impl.PruneExpander(layer, seed=seed + positions.get(id(layer), 0), **options)

    already = [f"{layer.name!r} ({type(layer).__name__})" for layer in model.layers
               if graph_lib.is_pruning_wrapper(layer)]
    if already and not any(_selected(layer, layers) for layer in model.layers
                           if not graph_lib.is_pruning_wrapper(layer)):
        raise ValueError(f"Model {model.name!r} is already pruned: layer(s) {', '.join(already)} are pruning "
                         f"wrappers. Keep training it with ExpanderPruningCallback, or call "
                         f"keras_expander.strip_pruning(model) first and prune the stripped model.")
    pruned = impl.clone_with(model, clone_function)
    if not wrapped:
        raise ValueError(f"Model {model.name!r} has no SimpleRNN, LSTM, GRU or Bidirectional layer to prune "
                         f"(layers: {[type(layer).__name__ for layer in model.layers]}).")
    left_dense = [f"{layer.name!r} ({type(layer).__name__}: {graph_lib.unsupported_reason(layer)})"
                  for layer in model.layers if graph_lib.recurrent_cells(layer) and not graph_lib.is_recurrent(layer)
                  or type(layer).__name__.startswith("ConvLSTM")]
    if left_dense:
        warnings.warn(f"prune_expander left these recurrent layers dense: {'; '.join(left_dense)}.", stacklevel=2)
    return pruned


def strip_pruning(model):
    """Removes pruning wrappers after baking the masks into the weights, and checks it.

    tf_keras models go through tfmot's `strip_pruning`; Keras 3 models are cloned without their wrappers, and the
    matrices get back the constraints they had before pruning.

    Args:
        model: A tf_keras or Keras 3 model with `PruneExpander` (or, tf_keras only, tfmot `PruneLowMagnitude`)
            layers.

    Returns:
        The stripped model (plain layers sharing the trained weights), whose prunable weights are exactly zero
        wherever the masks were zero.

    Raises:
        TypeError: `model` is not a Keras model.
        RuntimeError: a stripped weight is non-zero where its mask was zero (never expected; would mean the
            export carries pruned weights).
    """
    impl = implementation(model)
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
