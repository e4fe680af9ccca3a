"""Expansion-aware pruning of tf_keras models on tfmot (imported only when a tf_keras model is pruned).

`PruneExpander` is tfmot's `PruneLowMagnitude` wrapper with three differences: its masks are chosen by
`ExpanderPruningCallback` under a mask policy (tfmot's in-graph top-k would overwrite them), it owns the stop-rule
variables of its `ExpanderPruningSchedule` (so they are saved and restored with the model), and it refuses to train
without the callback instead of silently not pruning.
"""

from __future__ import annotations

import inspect

from keras_expander import layers as layers_lib
from keras_expander.frameworks import PruneLowMagnitude, Pruning, tf, tf_keras, tfmot
from keras_expander.pruning import wrapper as wrapper_lib
from keras_expander.pruning.schedule import ExpanderPruningSchedule


@tf_keras.utils.register_keras_serializable(package="keras_expander")
class PruneExpander(PruneLowMagnitude):
    """tfmot pruning wrapper whose masks follow a keras_expander mask policy and stop rule.

    Args:
        layer: The tf_keras layer to prune (SimpleRNN, LSTM, GRU, RNN over their cells, Bidirectional; Dense when
            asked for).
        pruning_schedule: An `ExpanderPruningSchedule`; the wrapper keeps its own copy (one stop state per layer).
        mask_policy: One of `keras_expander.MASK_POLICIES` (default "degree_floor_magnitude").
        min_degree: Degree floor of "degree_floor_magnitude", >= 1.
        allocation: How each layer's non-zeros are split between its graphs: one of `keras_expander.ALLOCATIONS`
            ("uniform", the default: every graph at the schedule's sparsity; "erk"; "expansion";
            keras_expander.pruning.allocation gives their formulas). The layer's total is the same for all.
        seed: Seed of "random_biregular" and "random".
        **kwargs: Passed to tfmot's `PruneLowMagnitude` (e.g. `name`).

    Raises:
        TypeError: `pruning_schedule` is not an `ExpanderPruningSchedule`, or the layer is unsupported.
        ValueError: unknown `mask_policy` or `allocation` (or one the policy cannot follow), or `min_degree` < 1.
    """

    def __init__(self, layer, pruning_schedule, mask_policy: str = "degree_floor_magnitude", min_degree: int = 1,
                 seed: int = 0, allocation: str = "uniform", **kwargs):
        wrapper_lib.check_wrapper_options(layer, pruning_schedule, mask_policy, min_degree, allocation)
        if not hasattr(layer, "get_prunable_weights"):
            # Our own list instead of tfmot's registry, which knows no Bidirectional and, when tf.keras is Keras 3,
            # looks the RNN cells up among Keras 3 classes and refuses tf_keras ones.
            layer.get_prunable_weights = lambda: list(layers_lib.matrix_variables(layer).values())
        super().__init__(layer, pruning_schedule=ExpanderPruningSchedule.from_config(pruning_schedule.get_config()),
                         **kwargs)
        self.mask_policy = mask_policy
        self.allocation = allocation
        self.min_degree = int(min_degree)
        self.seed = int(seed)
        self.callback_attached = False
        # Sequence masks pass through as through the unwrapped layer (tfmot's wrapper would drop them after it).
        self.supports_masking = layer.supports_masking

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
        wrapper_lib.check_min_degree(self)
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
            raise RuntimeError(wrapper_lib.CALLBACK_MISSING.format(name=self.layer.name))

        def increment_step():
            with tf.control_dependencies([self.pruning_step.assign_add(1)]):
                return tf.no_op()

        # tfmot's wrapper also runs its own magnitude top-k here; the callback owns the masks instead.
        self.add_update(tf.__internal__.smart_cond.smart_cond(training, increment_step, tf.no_op))
        self.add_update(self.pruning_obj.weight_mask_op())
        if "training" in inspect.getfullargspec(self.layer.call).args:
            return self.layer.call(inputs, training=training, **kwargs)
        return self.layer.call(inputs, **kwargs)

    def compute_mask(self, inputs, mask=None):
        """The wrapped layer's output mask (e.g. the sequence mask of a layer with return_sequences=True)."""
        return self.layer.compute_mask(inputs, mask)

    def reset_states(self, states=None):
        """Resets a stateful wrapped layer, as `model.reset_states()` expects of every stateful layer."""
        if states is None:
            self.layer.reset_states()
        else:
            self.layer.reset_states(states)

    def commit_masks(self, masks: dict) -> None:
        """Writes new masks; tfmot's mask op applies them to the weights at the next forward pass.

        Args:
            masks: Dict matrix name (as in `keras_expander.layers.matrix_variables`) -> bool array of its shape.
        """
        for key, mask in layers_lib.mask_variables(self).items():
            mask.assign(masks[key].astype(mask.dtype.as_numpy_dtype))

    def get_config(self):
        config = super().get_config()
        config.update(mask_policy=self.mask_policy, min_degree=self.min_degree, seed=self.seed,
                      allocation=self.allocation)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["pruning_schedule"] = ExpanderPruningSchedule.from_config(config["pruning_schedule"])
        config["layer"] = tf_keras.layers.deserialize(config["layer"])
        return cls(**config)


def clone_with(model, clone_function):
    """`tf_keras.models.clone_model` with `clone_function`, keeping the returned layers (and their weights)."""
    return tf_keras.models.clone_model(model, clone_function=clone_function)


def strip(model):
    """Bakes the masks into the weights and removes the wrappers with tfmot's `strip_pruning`.

    Args:
        model: A tf_keras model with `PruneExpander` or tfmot `PruneLowMagnitude` layers.

    Returns:
        The stripped model (plain layers sharing the trained weights).
    """
    for wrapper in wrapper_lib.pruning_wrappers(model):
        wrapper.pruning_obj.weight_mask_op()
    return tfmot.sparsity.keras.strip_pruning(model)


def load(path: str):
    """Loads a tf_keras model (`.keras` file or SavedModel folder) inside tfmot's `prune_scope`."""
    with tfmot.sparsity.keras.prune_scope():
        return tf_keras.models.load_model(path)
