"""TensorFlow, Keras 3, tf_keras and tfmot, each imported on first use and without changing what `tf.keras` means;
which Keras an object belongs to; warnings that skip these frameworks' frames to point at the user's line.

`from keras_expander.frameworks import tf` (or `keras`, `tf_keras`, `tfmot`, `PruneLowMagnitude`, `Pruning`) imports
that package at that moment; importing `keras_expander` imports none of them.

tfmot 0.8.1 prunes only tf_keras (Keras 2) objects, and importing it sets ``TF_USE_LEGACY_KERAS=1`` and reads
`tf.keras` (tensorflow_model_optimization/python/core/keras/compat.py). TensorFlow resolves `tf.keras` once, on its
first use, from that variable, so an unguarded tfmot import would turn `tf.keras` into tf_keras for the rest of a
Keras 3 user's process. `tfmot` is therefore imported only when a tf_keras model is pruned, and `_import_tfmot`
first lets TensorFlow resolve `tf.keras` under the user's own setting and afterwards restores the variable as it
was: a Keras 3 user keeps Keras 3 and a tf_keras user (``TF_USE_LEGACY_KERAS=1``) keeps tf_keras.
"""

import importlib
import os
import sys
import tempfile
import warnings

_TFMOT = "tensorflow_model_optimization"
# Top-level packages whose frames a warning skips on its way to the user's line (`warn_user`).
LIBRARY_PACKAGES = frozenset({"keras_expander", "keras", "tf_keras", "tensorflow", "tensorflow_model_optimization",
                              "absl"})


def _import_tfmot():
    if _TFMOT in sys.modules:
        return sys.modules[_TFMOT]
    import tensorflow as tf

    getattr(tf.keras, "__version__", None)  # resolves tf.keras now, under the user's setting
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        return importlib.import_module(_TFMOT)
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved


def __getattr__(name):
    if name == "tf":
        return importlib.import_module("tensorflow")
    if name in ("keras", "tf_keras"):
        return importlib.import_module(name)
    if name == "tfmot":
        return _import_tfmot()
    if name == "PruneLowMagnitude":
        _import_tfmot()
        return importlib.import_module(f"{_TFMOT}.python.core.sparsity.keras.pruning_wrapper").PruneLowMagnitude
    if name == "Pruning":  # tfmot's masking object; not exported publicly
        _import_tfmot()
        return importlib.import_module(f"{_TFMOT}.python.core.sparsity.keras.pruning_impl").Pruning
    raise AttributeError(f"module 'keras_expander.frameworks' has no attribute {name!r}")


def keras_flavour(obj) -> str:
    """Which Keras an object belongs to: "keras3" or "tf_keras".

    Args:
        obj: A Keras model or layer.

    Returns:
        "keras3" for Keras 3 (`import keras`) objects, "tf_keras" for tf_keras (Keras 2) objects.

    Raises:
        TypeError: `obj` is neither (the message names its type).
    """
    keras = importlib.import_module("keras")
    if isinstance(obj, keras.layers.Layer):
        return "keras3"
    tf_keras = importlib.import_module("tf_keras")
    if isinstance(obj, tf_keras.layers.Layer):
        return "tf_keras"
    raise TypeError(f"Expected a Keras 3 or tf_keras model or layer. Received: {type(obj)!r}")


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` with the stacklevel of the first frame outside keras_expander, Keras and TensorFlow.

    A warning raised inside `fit` (from a callback) or inside `prune_expander` then names the user's own line
    (`model.fit(...)`, `ExpanderPruningSchedule(...)`), not a library line.

    Args:
        message: The warning text.
        category: The warning class.
    """
    frame, level = sys._getframe(1), 2  # stacklevel 1 is this function, 2 its caller
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in LIBRARY_PACKAGES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def import_tensorflow_quietly() -> None:
    """Loads TensorFlow with its start-up log lines held back, for command-line entry points: TensorFlow writes
    them to the C-level stderr before its logging is set up, so TF_CPP_MIN_LOG_LEVEL cannot hide them. They are
    shown if the import fails. A TF_CPP_MIN_LOG_LEVEL the user set is kept; otherwise C++ log lines are hidden
    (real failures still raise Python errors)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
