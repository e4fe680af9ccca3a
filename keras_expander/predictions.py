"""How a classifier's outputs become predicted labels, for every check that measures accuracy or agreement.

The stop rule's held-out accuracy (`keras_expander.pruning.callback`), the export's verification
(`keras_expander.tflite.export`) and the firmware's accuracy (`keras_expander.firmware.deploy`) all read outputs
through one `OutputReading`, so that no check takes an argmax over a single value (constant: accuracy equal to the
share of label 0, every runtime in 100 % agreement). The rules are Keras' own metrics:

- several outputs, softmax or logits: the predicted class is the argmax of the last axis (`SparseCategoricalAccuracy`
  / `CategoricalAccuracy`); labels are class indices or one-hot rows;
- one output: a sigmoid probability is class 1 when > 0.5, a logit when > 0 (`BinaryAccuracy(threshold=0.5)` on the
  probability, the same decision on the logit); labels are 0 or 1.

What none of these rules can read is refused with one line naming the output and what to do: several sigmoid
outputs with multi-hot labels (multi-label), one output through another activation (tanh, relu, a softmax over one
unit, which is always 1), labels outside the classes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SINGLE_OUTPUT_THRESHOLDS = {"sigmoid": 0.5, "linear": 0.0}  # probability > 0.5; logit > 0 (sigmoid(0) = 0.5)


def _not_one_hot(y: np.ndarray) -> np.ndarray:
    """bool of shape (N,): the rows of a 2-D label array that are not one-hot (multi-hot or soft labels)."""
    return ~(np.isin(y, (0, 1)).all(axis=1) & (y.sum(axis=1) == 1))


@dataclasses.dataclass(frozen=True)
class OutputReading:
    """The rule that turns outputs into predicted labels.

    Attributes:
        classes: Number of classes (2 for a single output).
        threshold: None for an argmax over `classes` outputs; for a single output, the value above which the
            prediction is class 1 (0.5 for a sigmoid probability, 0.0 for a logit).
        description: The rule in words, for reports, e.g. "argmax of 10 outputs" or "sigmoid output > 0.5".
    """

    classes: int
    threshold: float | None
    description: str

    def predicted(self, outputs) -> np.ndarray:
        """Predicted labels, int64 of shape (N,), from float outputs of shape (N, classes), or (N, 1) / (N,) for a
        single output (in the units of the Keras model: probability or logit)."""
        outputs = np.asarray(outputs)
        if self.threshold is None:
            return np.argmax(outputs, axis=-1).astype(np.int64)
        return (outputs.reshape(len(outputs)) > self.threshold).astype(np.int64)

    def labels(self, y, name: str = "y") -> np.ndarray:
        """Labels as int64 class indices of shape (N,).

        Args:
            y: Class indices of shape (N,) (or (N, 1) for a single output), or one-hot rows of shape (N, classes).
            name: The argument's name for the error message.

        Raises:
            ValueError: multi-hot rows (multi-label data), or a label outside 0 .. classes - 1 (0 or 1 for a
                single output), naming `name` and the values received.
        """
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == self.classes and self.classes > 1 and self.threshold is None:
            not_one_hot = _not_one_hot(y)
            if not_one_hot.any():
                raise ValueError(f"Argument `{name}` has rows that are not one-hot (e.g. {y[not_one_hot][0]}): "
                                 f"multi-label or soft labels, which accuracy by {self.description} cannot measure. "
                                 f"Pass class indices of shape (N,) or one-hot rows of a single-label classifier.")
            return np.argmax(y, axis=1).astype(np.int64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"Argument `{name}` must hold class indices of shape (N,) or one-hot rows of shape "
                             f"(N, {self.classes}). Received: {name} of shape {y.shape}.")
        valid = np.isfinite(y) & (y == np.round(y)) & (y >= 0) & (y < self.classes) if y.size else np.ones(0, bool)
        if not valid.all():
            allowed = "0 or 1 (single output)" if self.threshold is not None else f"in 0 .. {self.classes - 1}"
            raise ValueError(f"Argument `{name}` must hold class indices {allowed} for a model read by "
                             f"{self.description}. Received: {name} with values {np.unique(y[~valid])[:5].tolist()}.")
        return y.astype(np.int64)

    def accuracy(self, outputs, y, name: str = "y") -> float:
        """Fraction in [0, 1] of `outputs` whose predicted label equals the label in `y` (`labels`)."""
        return float(np.mean(self.predicted(outputs) == self.labels(y, name)))

    def agreement(self, a, b) -> float:
        """Fraction in [0, 1] of rows where two runtimes' outputs predict the same label."""
        return float(np.mean(self.predicted(a) == self.predicted(b)))


def output_layer(model):
    """The layer that produces a Keras model's (first) output: from the functional graph where there is one
    (tf_keras and Keras 3 keep it in `_keras_history`), else the last layer; None for a model with no layers."""
    outputs = getattr(model, "outputs", None) or []
    history = getattr(outputs[0], "_keras_history", None) if outputs else None
    if history is not None:
        return history[0]
    layers = getattr(model, "layers", None) or []
    return layers[-1] if layers else None


def output_activation(layer) -> str | None:
    """Name of the activation a layer applies last ("sigmoid", "softmax", "linear", ...), None when unknown."""
    if layer is None:
        return None
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return activation if isinstance(activation, str) else getattr(activation, "__name__", None)


def output_reading(model, width: int | None = None, y=None, name: str = "y") -> OutputReading:
    """How the checks read a Keras model's outputs: argmax over several, threshold of a single one (module
    docstring).

    Args:
        model: A tf_keras or Keras 3 classifier (pruned or not).
        width: Number of outputs per sample; default from the model's output shape (needed for a subclassed
            model, e.g. the last axis of its predictions).
        y: Optional labels, to tell one-hot labels of several sigmoid outputs (readable by argmax) from multi-hot
            ones (multi-label: refused).
        name: The labels' argument name, for messages.

    Returns:
        An `OutputReading`.

    Raises:
        ValueError: see `reading_for`; also an output width that is unknown, or more than one output.
    """
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1:
        raise ValueError(f"Model {getattr(model, 'name', '?')!r} has {len(outputs)} outputs; accuracy reads one "
                         f"classifier output. Measure a model with one output (e.g. keras.Model(inputs, "
                         f"model.outputs[0])), or choose a spectral stop rule such as stop_rule='hold'.")
    layer = output_layer(model)
    activation = output_activation(layer)
    where = (f"Model {getattr(model, 'name', '?')!r} (output layer {getattr(layer, 'name', '?')!r}, "
             f"activation {activation!r})")
    if width is None:
        shape = tuple(outputs[0].shape) if outputs else ()
        width = int(shape[-1]) if len(shape) >= 2 and shape[-1] is not None else 1 if len(shape) == 1 else None
    if not width:
        raise ValueError(f"{where}: its output width is unknown; give it an Input, or call it on data once, so that "
                         f"its output shape is known.")
    return reading_for(activation, width, where, y, name)


# The TFLite operator that writes a flatbuffer's output tensor, as the Keras activation it computes.
TFLITE_OUTPUT_ACTIVATIONS = {"LOGISTIC": "sigmoid", "SOFTMAX": "softmax", "TANH": "tanh", "RELU": "relu"}


def flatbuffer_reading(output_op: str, width: int, y=None, name: str = "y") -> OutputReading:
    """How the checks read a `.tflite` model's outputs, from the operator that writes its output tensor.

    Args:
        output_op: That operator's name, e.g. "LOGISTIC" or "FULLY_CONNECTED"
            (`keras_expander.firmware.project.output_op`); any operator not in `TFLITE_OUTPUT_ACTIVATIONS` is read
            as a logit.
        width: Number of outputs per sample.
        y, name: As for `output_reading`.

    Returns:
        An `OutputReading`, in the dequantized units of the output.

    Raises:
        ValueError: see `reading_for`.
    """
    activation = TFLITE_OUTPUT_ACTIVATIONS.get(output_op, "linear")
    return reading_for(activation, width, f"The model (output written by {output_op}, read as {activation})", y, name)


def reading_for(activation: str | None, width: int, where: str, y=None, name: str = "y") -> OutputReading:
    """The `OutputReading` of `width` outputs through `activation`.

    Args:
        activation: "sigmoid", "linear", "softmax", ... or None when unknown.
        width: Number of outputs per sample, >= 1.
        where: The model and its output, for messages (starts a sentence).
        y, name: As for `output_reading`.

    Raises:
        ValueError: one line starting with `where`, for a single output through an activation other than sigmoid
            or none (a logit): tanh, relu, a softmax over one unit (always 1), unknown; or several sigmoid outputs
            with multi-hot labels `y` (a multi-label model).
    """
    if width == 1:
        if activation not in SINGLE_OUTPUT_THRESHOLDS:
            raise ValueError(f"{where} has a single output; accuracy reads a single output as a sigmoid probability "
                             f"(> 0.5) or a logit (> 0), as Keras' BinaryAccuracy does. End the model with "
                             f"Dense(1, activation='sigmoid') or Dense(1) (a logit)"
                             + (", not a softmax over one unit, which is always 1." if activation == "softmax"
                                else "."))
        threshold = SINGLE_OUTPUT_THRESHOLDS[activation]
        return OutputReading(2, threshold, f"{'sigmoid' if activation == 'sigmoid' else 'logit'} output > "
                                           f"{threshold:g}")
    if activation == "sigmoid" and y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and _not_one_hot(y).any():
            raise ValueError(f"{where} has {width} sigmoid outputs and `{name}` has multi-hot rows: a multi-label "
                             f"model, which accuracy by argmax cannot measure. Measure it with your own metric (e.g. "
                             f"keras.metrics.BinaryAccuracy per label); the stop rule stop_rule='tolerance' and the "
                             f"export's verification read single-label classifiers.")
    return OutputReading(width, None, f"argmax of {width} outputs")


# A model this close to the majority-class rate has too little accuracy to lose for an accuracy knee, a crossing
# verdict or a comparison of pruning methods to mean anything (the knee itself looks for a 1-point drop).
NEAR_CHANCE_POINTS = 10.0


def chance_accuracy(y) -> float:
    """Accuracy in [0, 1] of always answering the most frequent label of `y` (class indices of shape (N,), or
    one-hot rows): the floor a classifier must clear to have learned anything."""
    y = np.asarray(y)
    labels = np.argmax(y, axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))
    return float(np.max(np.unique(labels, return_counts=True)[1]) / len(labels)) if len(labels) else float("nan")


def near_chance(accuracy: float, y, points: float = NEAR_CHANCE_POINTS) -> bool:
    """Whether `accuracy` (in [0, 1], on labels `y`) is less than `points` accuracy points above `chance_accuracy`
    of `y`: a model that never learned, from whose accuracy no conclusion is drawn."""
    return bool(100.0 * (accuracy - chance_accuracy(y)) < points)


def no_conclusion_reason(accuracy: float, y, what: str = "the dense model") -> str | None:
    """The sentence a report prints instead of a conclusion from accuracy when `what` is `near_chance`, else None,
    e.g. "no conclusion: the dense model is at 12.0 %, within 10 points of chance (11.5 %, always the most frequent
    label)"."""
    if not near_chance(accuracy, y):
        return None
    return (f"no conclusion: {what} is at {100 * accuracy:.1f} %, within {NEAR_CHANCE_POINTS:g} points of chance "
            f"({100 * chance_accuracy(y):.1f} %, always the most frequent label)")
