"""The one module that imports TensorFlow, tf_keras and tfmot, with the environment they need.

tfmot 0.8.1 accepts only tf_keras (Keras 2) objects, and importing it sets ``TF_USE_LEGACY_KERAS=1`` as a side
effect, which silently changes what ``tf.keras`` means for code imported afterwards. We set the variable here,
before TensorFlow is imported (and refuse an explicit TF_USE_LEGACY_KERAS=0 instead of overriding it), so that
``tf.keras`` is tf_keras before and after tfmot is imported, and we use ``tf_keras`` explicitly everywhere. Import keras_expander (or this module) before TensorFlow to get the same
``tf.keras`` in your own code; keras_expander itself never relies on ``tf.keras``.
"""

import os

_USER_VALUE = os.environ.get("TF_USE_LEGACY_KERAS")
if _USER_VALUE is not None and _USER_VALUE.strip().lower() not in ("1", "true"):
    # Never override what the user set: tfmot would flip it to 1 anyway, changing tf.keras behind their back.
    raise ImportError(f"keras_expander's pruning API runs on tf_keras through tfmot, which needs "
                      f"TF_USE_LEGACY_KERAS=1, but the environment sets TF_USE_LEGACY_KERAS={_USER_VALUE!r}; unset it "
                      f"or set it to 1 (the analysis functions work either way).")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
# tfmot's wrapper class and its masking object are not exported publicly; isinstance checks and our subclass
# need them.
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_impl import Pruning  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude,
)

__all__ = ["tf", "tf_keras", "tfmot", "PruneLowMagnitude", "Pruning"]
