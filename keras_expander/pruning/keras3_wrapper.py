"""Expansion-aware pruning of Keras 3 models on every backend: masks in non-trainable variables, applied to the
matrices as the wrapped layer reads them.

Keras 3 has no pruning API and tfmot does not accept Keras 3 objects (tfmot issue #1119). `PruneExpander` wraps a
recurrent layer and holds, as non-trainable weights saved with the model, one float mask per prunable matrix, the
pruning step and the stop state of its `ExpanderPruningSchedule`. Its `call` runs the wrapped layer inside a
`keras.StatelessScope` that maps each matrix to mask * matrix (and every other variable the layer uses to its own
value, written back afterwards): the forward pass sees the pruned matrices and the gradient of a pruned weight is
exactly zero, on TensorFlow, JAX and PyTorch alike. A weight constraint cannot do this on JAX: the jitted train step
applies constraints in the optimizer's own stateless scope, where a mask variable reads as its initial value
(keras/src/backend/jax/trainer.py, `train_step`; optimizers/base_optimizer.py, `stateless_apply`). The stored pruned
weights can still move with the optimizer's momentum from before they were pruned, so `ExpanderPruningCallback`
writes mask * weights into them at every pruning step, epoch end and the end of `fit` (as tfmot's
`UpdatePruningStep` does at epoch end), and `strip` does once more. The callback chooses the masks and keeps the
step, exactly as on the tf_keras path.

Only `keras.ops` and `keras.StatelessScope` are used, so the wrapper imports no TensorFlow on JAX or PyTorch.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_expander import layers as layers_lib
from keras_expander.pruning import wrapper as wrapper_lib
from keras_expander.pruning.schedule import ExpanderPruningSchedule


def masked(weight, mask):
    """weight * mask, the mask cast to the weight's dtype."""
    return keras.ops.multiply(weight, keras.ops.cast(mask, weight.dtype))


def variables_used_in_call(layer) -> list:
    """Every Keras variable a layer reads or writes in `call`: its `variables` (weights, dropout seeds) and the
    states of its stateful RNN layers (Bidirectional directions included), which Keras keeps out of `variables`
    (keras/src/layers/rnn/rnn.py, `_create_state_variables`)."""
    found = {id(variable): variable for variable in layer.variables}
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        if getattr(sublayer, "stateful", False) and getattr(sublayer, "states", None) is not None:
            found.update((id(state), state) for state in keras.tree.flatten(sublayer.states))
    return list(found.values())


@keras.saving.register_keras_serializable(package="keras_expander")
class PruneExpander(keras.layers.Wrapper):
    """Keras 3 pruning wrapper whose masks follow a keras_expander mask policy and stop rule.

    The Keras 3 twin of `keras_expander.pruning.tf_keras_wrapper.PruneExpander` (same arguments, attributes and checks).

    Args:
        layer: The Keras 3 layer to prune (SimpleRNN, LSTM, GRU, RNN over their cells, Bidirectional; Dense when
            asked for).
        pruning_schedule: An `ExpanderPruningSchedule`; the wrapper keeps its own copy (one stop state per layer).
        mask_policy: One of `keras_expander.MASK_POLICIES` (default "degree_floor_magnitude").
        min_degree: Degree floor of "degree_floor_magnitude", >= 1.
        allocation: How each layer's non-zeros are split between its graphs: one of `keras_expander.ALLOCATIONS`
            ("uniform", the default: every graph at the schedule's sparsity; "erk"; "expansion";
            keras_expander.pruning.allocation gives their formulas). The layer's total is the same for all.
        seed: Seed of the random policies.
        **kwargs: Passed to `keras.layers.Wrapper` (e.g. `name`).

    Attributes:
        pruning_vars: [(weight variable, mask variable)] per prunable matrix.
        pruning_step: int64 variable, -1 before training; written by the callback.
        expansion_stopped, expansion_sparsity_cap: float32 stop-rule variables bound to the schedule.

    Raises:
        TypeError: `pruning_schedule` is not an `ExpanderPruningSchedule`, or the layer is unsupported.
        ValueError: unknown `mask_policy` or `allocation` (or one the policy cannot follow), `min_degree` < 1, or
            (at build) `min_degree` above a graph's side.
    """

    def __init__(self, layer, pruning_schedule, mask_policy: str = "degree_floor_magnitude", min_degree: int = 1,
                 seed: int = 0, allocation: str = "uniform", **kwargs):
        wrapper_lib.check_wrapper_options(layer, pruning_schedule, mask_policy, min_degree, allocation)
        kwargs.setdefault("name", f"prune_expander_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = ExpanderPruningSchedule.from_config(pruning_schedule.get_config())
        self.mask_policy = mask_policy
        self.allocation = allocation
        self.min_degree = int(min_degree)
        self.seed = int(seed)
        self.callback_attached = False
        self.pruning_vars = []
        # Sequence masks pass through as through the unwrapped layer (and Keras warns of none destroyed).
        self.supports_masking = layer.supports_masking

    def build(self, input_shape=None):
        super().build(input_shape)
        pruning_vars = []
        for key, weight in layers_lib.matrix_variables(self.layer).items():
            mask = self.add_weight(name=f"{key.replace('/', '_')}_mask", shape=weight.shape, initializer="ones",
                                   dtype=weight.dtype, trainable=False)
            pruning_vars.append((weight, mask))
        self.pruning_vars = pruning_vars
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), initializer=keras.initializers.Constant(-1),
                                            dtype="int32", trainable=False)
        self.expansion_stopped = self.add_weight(name="expansion_stopped", shape=(), initializer="zeros",
                                                 dtype="float32", trainable=False)
        self.expansion_sparsity_cap = self.add_weight(name="expansion_sparsity_cap", shape=(), initializer="ones",
                                                      dtype="float32", trainable=False)
        self.pruning_schedule.bind_state(self.expansion_stopped, self.expansion_sparsity_cap)
        wrapper_lib.check_min_degree(self)

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training and not self.callback_attached:
            raise RuntimeError(wrapper_lib.CALLBACK_MISSING.format(name=self.layer.name))
        if mask is not None:
            kwargs["mask"] = mask
        pruned = {id(weight): masked(weight, weight_mask) for weight, weight_mask in self.pruning_vars}
        variables = variables_used_in_call(self.layer)
        with keras.StatelessScope(state_mapping=[(variable, pruned.get(id(variable), variable.value))
                                                 for variable in variables]) as scope:
            mapped = dict(scope.state_mapping)
            outputs = self.layer(inputs, training=training, **kwargs)
        for variable in variables:  # what the layer wrote (a stateful layer's states, dropout seeds) is kept
            written = scope.get_current_value(variable)
            if written is not mapped[id(variable)]:
                variable.assign(written)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        """The wrapped layer's output mask (e.g. the sequence mask of a layer with return_sequences=True)."""
        return self.layer.compute_mask(inputs, mask)

    @property
    def stateful(self) -> bool:
        """Whether the wrapped layer keeps its state across batches (`stateful=True`)."""
        return bool(getattr(self.layer, "stateful", False))

    def reset_state(self):
        """Resets a stateful wrapped layer's state to zeros."""
        self.layer.reset_state()

    def reset_states(self):
        """Alias of `reset_state`, as on Keras 3 RNN layers."""
        self.layer.reset_state()

    def commit_masks(self, masks: dict) -> None:
        """Writes new masks and zeroes the weights they remove.

        Args:
            masks: Dict matrix name (as in `keras_expander.layers.matrix_variables`) -> bool array of its shape.
        """
        for key, mask in layers_lib.mask_variables(self).items():
            mask.assign(masks[key].astype(np.float32))
        self.apply_masks()

    def apply_masks(self) -> None:
        """Writes mask * weights into every pruned matrix (the forward pass applies the masks in any case)."""
        for weight, mask in self.pruning_vars:
            weight.assign(masked(weight, mask))

    def get_config(self):
        config = super().get_config()
        config.update(pruning_schedule=self.pruning_schedule.get_config(), mask_policy=self.mask_policy,
                      min_degree=self.min_degree, seed=self.seed, allocation=self.allocation)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["pruning_schedule"] = ExpanderPruningSchedule.from_config(config["pruning_schedule"])
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"], custom_objects=custom_objects)
        return cls(**config)


def clone_with(model, clone_function):
    """`keras.models.clone_model` with `clone_function`, keeping the returned layers (and their weights)."""
    return keras.models.clone_model(model, clone_function=clone_function)


def strip(model):
    """Bakes the masks into the weights and removes the wrappers.

    Args:
        model: A Keras 3 Sequential or functional model with `PruneExpander` layers (in nested Sequential or
            functional models too).

    Returns:
        A model of the unwrapped layers (sharing their weights); nested models are rebuilt the same way.
    """
    for wrapper in wrapper_lib.pruning_wrappers(model):
        wrapper.apply_masks()

    def unwrap(layer):
        if wrapper_lib.is_graph_model(layer):
            return clone_with(layer, unwrap)
        return layer.layer if isinstance(layer, PruneExpander) else layer

    return clone_with(model, unwrap)


def load(path: str):
    """Loads a Keras 3 `.keras` file, with keras_expander's wrapper registered."""
    return keras.saving.load_model(path)
