"""The contract both `PruneExpander` wrappers share (tf_keras: `tf_keras_wrapper`, Keras 3: `keras3_wrapper`).

Both take the same arguments with the same checks, keep their masks in `pruning_vars` as (weight, mask, threshold)
entries, and refuse to train without `ExpanderPruningCallback`. The callback, `strip_pruning` and the export read any
wrapper through the functions here.
"""

from __future__ import annotations

import numpy as np

from keras_expander import layers as layers_lib
from keras_expander.pruning import allocation as allocation_lib
from keras_expander.pruning import masks as masks_lib
from keras_expander.pruning.schedule import ExpanderPruningSchedule

CALLBACK_MISSING = ("Layer {name!r} is pruned by keras_expander but is training without ExpanderPruningCallback, "
                    "so its masks would never change. Pass keras_expander.ExpanderPruningCallback() in "
                    "model.fit(callbacks=[...]) (it replaces tfmot's UpdatePruningStep).")


def check_wrapper_options(layer, pruning_schedule, mask_policy: str, min_degree: int,
                          allocation: str = "uniform") -> None:
    """The argument checks shared by both `PruneExpander` wrappers.

    Raises:
        TypeError: `pruning_schedule` is not an `ExpanderPruningSchedule`, or the layer is unsupported.
        ValueError: unknown `mask_policy` or `allocation`, an allocation the mask policy cannot follow
            (`allocation.check_allocation`), or `min_degree` is not an integer >= 1.
    """
    if not isinstance(pruning_schedule, ExpanderPruningSchedule):
        raise TypeError(f"Argument `pruning_schedule` must be an ExpanderPruningSchedule. Received: "
                        f"pruning_schedule={pruning_schedule!r}")
    if mask_policy not in masks_lib.MASK_POLICIES:
        raise ValueError(f"Argument `mask_policy` must be one of {masks_lib.MASK_POLICIES}. Received: "
                         f"mask_policy={mask_policy!r}")
    allocation_lib.check_allocation(allocation, mask_policy)
    if isinstance(min_degree, bool) or not isinstance(min_degree, (int, np.integer)) or min_degree < 1:
        raise ValueError(f"Argument `min_degree` must be an integer >= 1. Received: min_degree={min_degree!r}")
    reason = layers_lib.unsupported_reason(layer)
    if reason is not None:
        raise TypeError(f"Layer {layer.name!r} of class {type(layer).__name__} cannot be pruned by "
                        f"keras_expander: {reason}.")


def check_min_degree(wrapper) -> None:
    """Refuses (at build) a degree floor larger than the smallest side of the wrapper's graphs.

    Raises:
        ValueError: naming the layer, the largest allowed value and the value received.
    """
    matrices = layers_lib.layer_matrices(wrapper)
    smallest_side = min(min(m.shape[0], m.shape[1] // len(matrices.gates)) for m in matrices.kernels.values())
    if wrapper.mask_policy == "degree_floor_magnitude" and wrapper.min_degree > smallest_side:
        raise ValueError(f"Argument `min_degree` must be at most {smallest_side} for layer {wrapper.layer.name!r} "
                         f"(its smallest graph side). Received: min_degree={wrapper.min_degree}")


def is_model(obj) -> bool:
    """True for any tf_keras or Keras 3 model, subclassed ones included."""
    return any(klass.__name__ == "Model" for klass in type(obj).__mro__)


def is_graph_model(obj) -> bool:
    """True for a Sequential or functional model (tf_keras or Keras 3): what `clone_model` can rebuild."""
    names = {klass.__name__ for klass in type(obj).__mro__}
    return is_model(obj) and bool({"Sequential", "Functional"} & names or getattr(obj, "_is_graph_network", False))


def pruning_wrappers(model) -> list:
    """Every pruning wrapper in a model, nested models included: `PruneExpander` (both Kerases) and tfmot's
    `PruneLowMagnitude`, in model order."""
    if model is None:
        return []
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if layers_lib.is_pruning_wrapper(layer)]


def value(variable) -> np.ndarray:
    """A tf_keras, Keras 3 or distributed (mirrored) variable's value as a numpy array."""
    return np.asarray(variable.numpy())


def mask_sparsity(wrapper) -> float:
    """Fraction of zeros over all masks of a pruning wrapper (read from its mask variables), in [0, 1]."""
    masks = [value(entry[1]) for entry in wrapper.pruning_vars]
    return 1.0 - sum(int(np.count_nonzero(m)) for m in masks) / sum(m.size for m in masks)
