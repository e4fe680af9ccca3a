"""`prune_expander` and `strip_pruning`: wrap recurrent layers for expansion-aware pruning, and unwrap them.

`PruneExpander` is tfmot's `PruneLowMagnitude` wrapper with three differences: its masks are chosen by
`ExpanderPruningCallback` under a mask policy (tfmot's in-graph top-k would overwrite them), it owns the stop-rule
variables of its `ExpanderPruningSchedule` (so they are saved and restored with the model), and it refuses to train
without the callback instead of silently not pruning.
"""

from __future__ import annotations

import inspect
import os
import warnings
import zipfile

import numpy as np

from keras_expander import graph as graph_lib
from keras_expander import masks as masks_lib
from keras_expander.backend import PruneLowMagnitude, Pruning, tf, tf_keras, tfmot
from keras_expander.schedule import ExpanderPruningSchedule

CALLBACK_MISSING = ("Layer {name!r} is pruned by keras_expander but is training without ExpanderPruningCallback, "
                    "so its masks would never change. Pass keras_expander.ExpanderPruningCallback() in "
                    "model.fit(callbacks=[...]) (it replaces tfmot's UpdatePruningStep).")


@tf_keras.utils.register_keras_serializable(package="keras_expander")
class PruneExpander(PruneLowMagnitude):
    """tfmot pruning wrapper whose masks follow a keras_expander mask policy and stop rule.

    Args:
        layer: The tf_keras layer to prune (SimpleRNN, LSTM; Dense when asked for).
        pruning_schedule: An `ExpanderPruningSchedule`; the wrapper keeps its own copy (one stop state per layer).
        mask_policy: "degree_floor_magnitude" (default), "magnitude", "per_gate_magnitude",
            "right_regular_magnitude",
            "random_biregular" or "random"
            (keras_expander.masks).
        min_degree: Degree floor of "degree_floor_magnitude", >= 1.
        seed: Seed of "random_biregular" and "random".
        **kwargs: Passed to tfmot's `PruneLowMagnitude` (e.g. `name`).

    Raises:
        TypeError: `pruning_schedule` is not an `ExpanderPruningSchedule`, or the layer is unsupported.
        ValueError: unknown `mask_policy`, or `min_degree` < 1.
    """

    def __init__(self, layer, pruning_schedule, mask_policy: str = "degree_floor_magnitude", min_degree: int = 1,
                 seed: int = 0, **kwargs):
        if not isinstance(pruning_schedule, ExpanderPruningSchedule):
            raise TypeError(f"Argument `pruning_schedule` must be an ExpanderPruningSchedule. Received: "
                            f"pruning_schedule={pruning_schedule!r}")
        if mask_policy not in masks_lib.MASK_POLICIES:
            raise ValueError(f"Argument `mask_policy` must be one of {masks_lib.MASK_POLICIES}. Received: "
                             f"mask_policy={mask_policy!r}")
        if not isinstance(min_degree, (int, np.integer)) or min_degree < 1:
            raise ValueError(f"Argument `min_degree` must be an integer >= 1. Received: min_degree={min_degree!r}")
        reason = graph_lib.unsupported_reason(layer)
        if reason is not None:
            raise TypeError(f"Layer {layer.name!r} of class {type(layer).__name__} cannot be pruned by "
                            f"keras_expander: {reason}.")
        super().__init__(layer, pruning_schedule=ExpanderPruningSchedule.from_config(pruning_schedule.get_config()),
                         **kwargs)
        self.mask_policy = mask_policy
        self.min_degree = int(min_degree)
        self.seed = int(seed)
        self.callback_attached = False

    def build(self, input_shape):
        # tfmot's build, except that mask and threshold variables are named after their matrix: tfmot names them
        # all "mask" / "threshold", which breaks `.h5` saving of layers with two prunable matrices (RNNs).
        tf_keras.layers.Wrapper.build(self, input_shape)
        self.prunable_weights = self.layer.get_prunable_weights()
        pruning_vars = []
        for weight in self.prunable_weights:
            dtype = getattr(weight, "true_dtype", weight.dtype)
            matrix = weight.name.split("/")[-1].split(":")[0]
            mask = self.add_weight(f"{matrix}_mask", shape=weight.shape, initializer=tf_keras.initializers.Ones(),
                                   dtype=dtype, trainable=False, aggregation=tf.VariableAggregation.MEAN)
            threshold = self.add_weight(f"{matrix}_threshold", shape=[], initializer=tf_keras.initializers.Zeros(),
                                        dtype=dtype, trainable=False, aggregation=tf.VariableAggregation.MEAN)
            pruning_vars.append((weight, mask, threshold))
        self.pruning_vars = pruning_vars
        self.pruning_step = self.add_weight("pruning_step", shape=[], initializer=tf_keras.initializers.Constant(-1),
                                            dtype=tf.int64, trainable=False)
        self.pruning_obj = Pruning(training_step_fn=lambda: self.pruning_step, pruning_vars=self.pruning_vars,
                                   pruning_schedule=self.pruning_schedule, block_size=self.block_size,
                                   sparsity_m_by_n=self.sparsity_m_by_n, block_pooling_type=self.block_pooling_type)
        matrices = graph_lib.layer_matrices(self)
        smallest_side = min(min(m.shape[0], m.shape[1] // len(matrices.gates)) for m in matrices.kernels.values())
        if self.mask_policy == "degree_floor_magnitude" and self.min_degree > smallest_side:
            raise ValueError(f"Argument `min_degree` must be at most {smallest_side} for layer {self.layer.name!r} "
                             f"(its smallest graph side). Received: min_degree={self.min_degree}")
        self.expansion_stopped = self.add_weight(
            "expansion_stopped", shape=[], initializer=tf_keras.initializers.Zeros(), dtype=tf.float32,
            trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.expansion_sparsity_cap = self.add_weight(
            "expansion_sparsity_cap", shape=[], initializer=tf_keras.initializers.Ones(), dtype=tf.float32,
            trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.pruning_schedule.bind_state(self.expansion_stopped, self.expansion_sparsity_cap)

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = tf_keras.backend.learning_phase()
        if training is True and not self.callback_attached:
            raise RuntimeError(CALLBACK_MISSING.format(name=self.layer.name))

        def increment_step():
            with tf.control_dependencies([self.pruning_step.assign_add(1)]):
                return tf.no_op()

        # tfmot's wrapper also runs its own magnitude top-k here; the callback owns the masks instead.
        self.add_update(tf.__internal__.smart_cond.smart_cond(training, increment_step, tf.no_op))
        self.add_update(self.pruning_obj.weight_mask_op())
        if "training" in inspect.getfullargspec(self.layer.call).args:
            return self.layer.call(inputs, training=training, **kwargs)
        return self.layer.call(inputs, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(mask_policy=self.mask_policy, min_degree=self.min_degree, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["pruning_schedule"] = ExpanderPruningSchedule.from_config(config["pruning_schedule"])
        config["layer"] = tf_keras.layers.deserialize(config["layer"])
        return cls(**config)


def mask_sparsity(wrapper) -> float:
    """Fraction of zeros over all masks of a tfmot pruning wrapper (read from its mask variables), in [0, 1]."""
    masks = [np.asarray(mask.numpy()) for _, mask, _ in wrapper.pruning_vars]
    return 1.0 - sum(int(np.count_nonzero(m)) for m in masks) / sum(m.size for m in masks)


def _selected(layer, layers) -> bool:
    if layers is None:
        return graph_lib.is_recurrent(layer)
    return layer.name in layers


def prune_expander(model_or_layer, pruning_schedule: ExpanderPruningSchedule,
                   mask_policy: str = "degree_floor_magnitude", min_degree: int = 1, seed: int = 0, layers=None):
    """Wraps the recurrent layers of a model (or one layer) for expansion-aware pruning.

    Like tfmot's `prune_low_magnitude`, but only SimpleRNN/LSTM layers are wrapped by default (Dense and the rest
    are left alone unless named in `layers`). Wrapped layers keep their weights.

    Args:
        model_or_layer: A tf_keras Sequential or functional model, or a single tf_keras layer.
        pruning_schedule: An `ExpanderPruningSchedule`; every wrapped layer gets its own copy.
        mask_policy: "degree_floor_magnitude" (default), "magnitude", "per_gate_magnitude",
            "right_regular_magnitude",
            "random_biregular" or "random".
        min_degree: Degree floor of "degree_floor_magnitude", >= 1.
        seed: Seed of the random policies (each layer adds its position in the model).
        layers: Names of the layers to wrap; None wraps every SimpleRNN and LSTM layer.

    Returns:
        A new model sharing the original layers (wrapped where selected), or a `PruneExpander` for a layer.

    Raises:
        TypeError: a selected layer is not supported (GRU, Bidirectional, ...), the model is subclassed or a
            Keras 3 model (tfmot only prunes tf_keras models), or `layers` is a string.
        ValueError: the model is not built, a name in `layers` is not in the model, or nothing would be wrapped.

    Warns:
        UserWarning: naming each GRU, Bidirectional or ConvLSTM layer left dense when `layers` is None.
    """
    options = dict(pruning_schedule=pruning_schedule, mask_policy=mask_policy, min_degree=min_degree)
    if not isinstance(model_or_layer, tf_keras.Model):
        if not isinstance(model_or_layer, tf_keras.layers.Layer):
            raise TypeError(f"Argument `model_or_layer` must be a tf_keras Model or Layer (tfmot prunes Keras 2 "
                            f"objects; build it with `import tf_keras`). Received: {type(model_or_layer)!r}")
        return PruneExpander(model_or_layer, seed=seed, **options)
    if not (isinstance(model_or_layer, tf_keras.Sequential) or model_or_layer._is_graph_network):
        raise TypeError(f"Argument `model_or_layer` must be a Sequential or functional model; subclassed model "
                        f"{type(model_or_layer).__name__} cannot be cloned. Wrap its layers with prune_expander.")
    if not model_or_layer.built:
        raise ValueError(f"Model {model_or_layer.name!r} is not built, so its weights do not exist yet: give it an "
                         f"Input (e.g. tf_keras.Input((timesteps, features))) or call model.build(input_shape) "
                         f"before prune_expander.")
    if isinstance(layers, str):
        raise TypeError(f"Argument `layers` must be a list of layer names, not a string. Received: "
                        f"layers={layers!r}; pass layers=[{layers!r}].")
    if layers is not None:
        layers = set(layers)
        missing = layers - {layer.name for layer in model_or_layer.layers}
        if missing:
            raise ValueError(f"Argument `layers` names layers not in the model: {sorted(missing)}.")
    positions = {id(layer): index for index, layer in enumerate(model_or_layer.layers)}
    wrapped = []

    def clone_function(layer):
        if isinstance(layer, PruneLowMagnitude) or not _selected(layer, layers):
            return layer
        wrapped.append(layer.name)
        return PruneExpander(layer, seed=seed + positions.get(id(layer), 0), **options)

    pruned = tf_keras.models.clone_model(model_or_layer, clone_function=clone_function)
    if not wrapped:
        raise ValueError(f"Model {model_or_layer.name!r} has no SimpleRNN or LSTM layer to prune (layers: "
                         f"{[type(layer).__name__ for layer in model_or_layer.layers]}).")
    left_dense = [f"{layer.name!r} ({type(layer).__name__}: {graph_lib.UNSUPPORTED[type(layer).__name__]})"
                  for layer in model_or_layer.layers if type(layer).__name__ in graph_lib.UNSUPPORTED]
    if left_dense:
        warnings.warn(f"prune_expander left these recurrent layers dense (it prunes SimpleRNN and LSTM): "
                      f"{'; '.join(left_dense)}.", stacklevel=2)
    return pruned


def strip_pruning(model):
    """Removes pruning wrappers (tfmot's `strip_pruning`) after baking the masks into the weights, and checks it.

    Args:
        model: A tf_keras model with `PruneExpander` or tfmot `PruneLowMagnitude` layers.

    Returns:
        The stripped model (plain layers sharing the trained weights), whose prunable weights are exactly zero
        wherever the masks were zero.

    Raises:
        RuntimeError: a stripped weight is non-zero where its mask was zero (never expected; would mean the
            export carries pruned weights).
    """
    wrappers = [layer for layer in model.layers if isinstance(layer, PruneLowMagnitude)]
    expected = []
    for wrapper in wrappers:
        wrapper.pruning_obj.weight_mask_op()
        expected.extend((weight, np.asarray(mask.numpy()) == 0) for weight, mask, _ in wrapper.pruning_vars)
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    for weight, zero in expected:
        leaked = int(np.count_nonzero(np.asarray(weight.numpy())[zero]))
        if leaked:
            raise RuntimeError(f"strip_pruning: {leaked} masked entries of {weight.name} are non-zero after baking "
                               f"the masks in.")
    return stripped


def load_model(path: str | os.PathLike):
    """Loads a tf_keras model (`.keras` file or SavedModel folder) that may hold pruning wrappers.

    `PruneExpander` and `ExpanderPruningSchedule` are registered with Keras; tfmot's own wrappers load through
    `tfmot.sparsity.keras.prune_scope()`. A `.keras` file written by Keras 3 is loaded with Keras 3 when tf_keras
    cannot read it.

    Args:
        path: File or folder to load.

    Returns:
        The model (tf_keras, or Keras 3 for Keras 3 files).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a `.keras` file that is not a zip archive (corrupt), an `.h5` file of a pruned
            recurrent model, or neither Keras can load it (the message names both errors).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Argument `path`: no model at {path!r}.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"Argument `path`: {path!r} is not a Keras .keras archive (a .keras file is a zip file); it "
                         f"is corrupt or truncated, or another format: save the model again.")
    with tfmot.sparsity.keras.prune_scope():
        try:
            return tf_keras.models.load_model(path)
        except Exception as legacy_error:  # try Keras 3 before giving up; report both
            if not path.endswith(".keras"):
                raise ValueError(f"Could not load model {path!r}: {legacy_error}") from legacy_error
            import keras  # Keras 3, only for its own files

            try:
                return keras.saving.load_model(path)
            except Exception as keras3_error:
                raise ValueError(f"Could not load model {path!r}: tf_keras: {legacy_error}; Keras 3: "
                                 f"{keras3_error}") from keras3_error
