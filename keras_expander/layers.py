"""Layer anatomy: which Keras layers we prune, their cells, gates, weight matrices and pruning wrappers.

Every stage asks this module about layers (pruning, the expansion metrics, the export's checks). It imports no
TensorFlow: layers are recognised by their class names (tf_keras, Keras 3, tfmot's `PruneLowMagnitude` wrapper and
keras_expander's `PruneExpander` wrappers alike) and their variables read with ``numpy()``.

Keras stores gates side by side in columns: column block g*H:(g+1)*H is gate g, in the order i, f, c, o for LSTM
and z, r, h (update, reset, candidate) for GRU, with either value of `reset_after` (it changes where the reset gate
acts and the bias shape, not the kernels). A Bidirectional layer has the matrices of both directions, named
``forward/<matrix>`` and ``backward/<matrix>``. `keras.layers.RNN` over an LSTMCell, GRUCell or SimpleRNNCell is read
like the corresponding layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LSTM_GATES = ("i", "f", "c", "o")
GRU_GATES = ("z", "r", "h")
SINGLE_GATE = "all"
DIRECTIONS = ("forward", "backward")
# Recurrent cells whose matrices are analysed, by class name (tf_keras and Keras 3 share the names).
CELL_GATES = {"LSTMCell": LSTM_GATES, "GRUCell": GRU_GATES, "SimpleRNNCell": (SINGLE_GATE,)}
# Pruning wrappers by class name: tfmot's and ours (both Kerases name theirs PruneExpander).
WRAPPER_CLASSES = {"PruneLowMagnitude", "PruneExpander"}
EXPANDER_WRAPPER = "PruneExpander"
# Recurrent layers refused with the reason given, by class name.
UNSUPPORTED = {
    "StackedRNNCells": "RNN over a list of cells (StackedRNNCells) is not supported: stack RNN layers with "
                       "return_sequences=True instead",
    "ConvLSTM1D": "ConvLSTM is not supported (convolutional, not a bipartite dense layer)",
    "ConvLSTM2D": "ConvLSTM is not supported (convolutional, not a bipartite dense layer)",
    "ConvLSTM3D": "ConvLSTM is not supported (convolutional, not a bipartite dense layer)",
}


@dataclasses.dataclass(frozen=True)
class LayerMatrices:
    """The prunable matrices of one supported layer, as numpy arrays.

    Attributes:
        layer: Layer name.
        gates: Gate labels in column-block order, e.g. ("i", "f", "c", "o"), ("z", "r", "h") or ("all",).
        kernels: Dict matrix name ("kernel", "recurrent_kernel", or those prefixed with "forward/" and
            "backward/") -> float array of shape (left, gates * H).
        masks: Dict of the same keys -> bool array of the same shapes.
    """

    layer: str
    gates: tuple[str, ...]
    kernels: dict
    masks: dict


def _class_names(obj) -> set[str]:
    return {klass.__name__ for klass in type(obj).__mro__}


def _to_numpy(variable) -> np.ndarray:
    value = variable.numpy() if hasattr(variable, "numpy") else variable
    return np.asarray(value)


def is_pruning_wrapper(layer) -> bool:
    """True for tfmot's `PruneLowMagnitude` and keras_expander's `PruneExpander` (tf_keras and Keras 3)."""
    return bool(_class_names(layer) & WRAPPER_CLASSES) and hasattr(layer, "layer")


def is_expander(layer) -> bool:
    """True for keras_expander's `PruneExpander` wrappers (tf_keras or Keras 3), False for tfmot's own wrapper."""
    return EXPANDER_WRAPPER in _class_names(layer)


def unwrap(layer):
    """The layer a pruning wrapper wraps, or the layer itself."""
    return layer.layer if is_pruning_wrapper(layer) else layer


def recurrent_cells(layer) -> list[tuple[str, object]]:
    """The recurrent cells of a layer with the prefix of their matrix names.

    Args:
        layer: Any Keras layer, wrapped or not.

    Returns:
        [("", cell)] for an RNN layer (SimpleRNN, LSTM, GRU, `RNN(cell)`), [("forward/", cell), ("backward/", cell)]
        for a Bidirectional one, [] for any other layer.
    """
    inner = unwrap(layer)
    if "Bidirectional" in _class_names(inner):
        directions = (getattr(inner, "forward_layer", None), getattr(inner, "backward_layer", None))
        return [(f"{name}/", getattr(direction, "cell", None)) for name, direction in zip(DIRECTIONS, directions)]
    cell = getattr(inner, "cell", None)
    return [("", cell)] if cell is not None else []


def _cell_gates(cell) -> tuple[str, ...] | None:
    known = _class_names(cell) & CELL_GATES.keys()
    return CELL_GATES[next(iter(known))] if known else None


def unsupported_reason(layer) -> str | None:
    """Why a layer cannot be analysed, or None when it can.

    Args:
        layer: Any Keras layer (tf_keras or Keras 3), optionally wrapped by a pruning wrapper.

    Returns:
        None for SimpleRNN, LSTM and GRU layers (including `keras.layers.RNN` over their cells and Bidirectional
        wrappers of them) and for Dense; otherwise a sentence naming the class.
    """
    inner = unwrap(layer)
    cells = recurrent_cells(layer)
    for class_name, reason in UNSUPPORTED.items():
        if class_name in _class_names(inner) or any(class_name in _class_names(cell) for _, cell in cells):
            return reason
    if cells:
        gates = [_cell_gates(cell) for _, cell in cells]
        if any(g is None for g in gates):
            names = ", ".join(type(cell).__name__ for _, cell in cells)
            return f"its cell ({names}) is not a SimpleRNNCell, LSTMCell or GRUCell"
        if len(set(gates)) > 1:
            return "its forward and backward layers have different cell types"
        return None
    if "Dense" in _class_names(inner):
        return None
    return f"{type(inner).__name__} is not a SimpleRNN, LSTM, GRU, Bidirectional or Dense layer"


def is_recurrent(layer) -> bool:
    """True for supported recurrent layers (SimpleRNN, LSTM, GRU, RNN over their cells, Bidirectional), wrapped or
    not."""
    return bool(recurrent_cells(layer)) and unsupported_reason(layer) is None


def layer_matrices(layer) -> LayerMatrices:
    """Reads the prunable matrices and their masks from a layer.

    Masks come from a pruning wrapper's mask variables when the layer is wrapped (not from `weights == 0`: right
    after an optimizer step tfmot's masked weights are briefly non-zero), and from `weights != 0` otherwise.

    Args:
        layer: A tf_keras or Keras 3 SimpleRNN, LSTM, GRU, Bidirectional or Dense layer, or a pruning wrapper of
            one. The layer must be built.

    Returns:
        A `LayerMatrices` with kernel (I, gates*H) and, for recurrent layers, recurrent_kernel (H, gates*H); for a
        Bidirectional layer, forward/kernel, forward/recurrent_kernel, backward/kernel, backward/recurrent_kernel.

    Raises:
        TypeError: the layer (or the wrapped layer) is not supported; the message names its class and why.
        ValueError: the layer is not built yet.
    """
    reason = unsupported_reason(layer)
    if reason is not None:
        raise TypeError(f"Layer {layer.name!r} of class {type(layer).__name__} cannot be read as bipartite graphs: "
                        f"{reason}.")
    cells = recurrent_cells(layer)
    gates = _cell_gates(cells[0][1]) if cells else (SINGLE_GATE,)
    variables = matrix_variables(layer)
    kernels = {key: _to_numpy(variable).astype(np.float64) for key, variable in variables.items()}
    masks = {key: value != 0 for key, value in kernels.items()}
    for key, mask in mask_variables(layer).items():
        masks[key] = _to_numpy(mask) != 0
    kernels = {key: np.where(masks[key], value, 0.0) for key, value in kernels.items()}
    return LayerMatrices(layer=unwrap(layer).name, gates=gates, kernels=kernels, masks=masks)


def matrix_variables(layer) -> dict:
    """The weight variables of a supported layer by matrix name.

    Args:
        layer: A built supported layer or a pruning wrapper of one.

    Returns:
        Dict matrix name -> variable (tf.Variable or Keras 3 Variable): {"kernel", "recurrent_kernel"} for an RNN
        layer, the same names prefixed with "forward/" and "backward/" for a Bidirectional one, {"kernel"} for Dense.

    Raises:
        ValueError: the layer is not built yet.
    """
    inner = unwrap(layer)
    cells = recurrent_cells(layer)
    if cells:
        variables = {f"{prefix}{name}": getattr(cell, name, None) for prefix, cell in cells
                     for name in ("kernel", "recurrent_kernel")}
    else:
        variables = {"kernel": getattr(inner, "kernel", None)}
    if any(variable is None for variable in variables.values()):
        raise ValueError(f"Layer {inner.name!r} is not built yet: call it on data or build the model first.")
    return variables


def mask_variables(layer) -> dict:
    """The mask variables of a pruning wrapper by matrix name ({} for an unwrapped layer).

    Args:
        layer: A built layer, wrapped or not.

    Returns:
        Dict matrix name (as in `matrix_variables`) -> the wrapper's float mask variable of the same shape.
    """
    if not is_pruning_wrapper(layer):
        return {}
    variables = matrix_variables(layer)
    return {key: entry[1] for entry in layer.pruning_vars for key, variable in variables.items()
            if entry[0] is variable}
