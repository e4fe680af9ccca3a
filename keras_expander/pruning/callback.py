"""`ExpanderPruningCallback`: the step clock of expansion-aware pruning.

At every pruning step of every `PruneExpander` layer it reads the weights, asks keras_expander.pruning.decision what to
do (candidate mask, criterion on every monitored graph, stop rule: commit, correct or hold), writes the masks, and
records the step; the held-out accuracy of ``stop_rule="tolerance"`` is measured here, as it needs the model. At
epoch end it writes each layer's sparsity, stop state and worst criterion value into Keras `logs` (every graph's
values on request). It drives tf_keras and Keras 3 models alike, replaces tfmot's `UpdatePruningStep` (it does its
work) and also monitors plain tfmot-pruned layers.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import keras
import numpy as np

from keras_expander import layers as layers_lib
from keras_expander.expansion import spectral
from keras_expander.frameworks import warn_user
from keras_expander.layers import is_expander
from keras_expander.predictions import output_reading
from keras_expander.pruning import decision as decision_lib
from keras_expander.pruning.schedule import ExpanderPruningSchedule
from keras_expander.pruning.wrapper import mask_sparsity, pruning_wrappers
from keras_expander.pruning.wrapper import value as variable_value


class StillLearningWarning(UserWarning):
    """The held-out accuracy of a model under ``stop_rule="tolerance"`` was still rising when pruning passed
    CALIBRATION_SPARSITY (`ExpanderPruningCallback.learning_trend`): the rule's answer may be past the knee."""


@dataclasses.dataclass(frozen=True)
class PruningEvent:
    """One pruning step of one layer.

    Attributes:
        step: Pruning step (optimizer iterations).
        layer: Layer name.
        target_sparsity: What the schedule asked for, in [0, 1).
        sparsity: Mask sparsity after the step (the old one when held), in [0, 1].
        committed: False when the stop rule held the layer instead.
        worst_value: Minimum criterion over the candidate's graphs (`nan` when undefined).
        worst_graph: The graph where it is.
        reason: Why the layer was held, or which graphs were corrected ("" when committed as proposed).
        kept_share: Under ``stop_rule="correct"``, the fraction of the failing graphs' magnitude edges that the
            committed blend kept (1.0 when no correction was needed).
        graphs: Graph name -> {"delta_r", "delta_s", "spectral_gap"} of the candidate (dimensionless; empty when
            the weights were not finite or the step was paused).
        paused: Under ``stop_rule="tolerance"``, True when the step was skipped until held-out accuracy recovers
            (not committed, not held: the layer may resume at a later step).
        holdout_accuracy: Under ``stop_rule="tolerance"``, the held-out accuracy in [0, 1] measured at this step
            (one measurement; the rule judges its mean with the steps before, `tolerance_window`); nan otherwise.
    """

    step: int
    layer: str
    target_sparsity: float
    sparsity: float
    committed: bool
    worst_value: float
    worst_graph: str
    reason: str = ""
    kept_share: float = 1.0
    graphs: dict = dataclasses.field(default_factory=dict)
    paused: bool = False
    holdout_accuracy: float = float("nan")


def _graphs(values: dict) -> dict:
    """The per-graph values an event keeps (the stop rule's own "criterion" copy dropped)."""
    return {name: {key: value[key] for key in ("delta_r", "delta_s", "spectral_gap")} for name, value in values.items()}


class _ExpectedSlowBatchHook(logging.Filter):
    """Drops tf_keras' "Callback method `on_train_batch_begin` is slow" warning: pruning steps do spectral work in
    that hook by design (about 16 ms per LSTM(128) layer), which is not a defect to report to the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`on_train_batch_begin` is slow" not in record.getMessage()


class _ExpectedTrainStepRetrace(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about Keras' train step: this callback drops
    the traced step at the end of every fit (so that a later fit without it fails instead of training with frozen
    masks), so each fit traces it once more by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "make_train_function" in message)


class DualKerasCallback(keras.callbacks.Callback):
    """A Keras 3 callback that tf_keras' `fit` accepts too: tf_keras' CallbackList asks every callback which batch
    hooks it implements. Subclasses that use `on_train_batch_begin`/`end` set `train_batch_hooks = True`."""

    train_batch_hooks = False

    def _implements_train_batch_hooks(self):
        return self.train_batch_hooks

    def _implements_test_batch_hooks(self):
        return False

    def _implements_predict_batch_hooks(self):
        return False


class ExpanderPruningCallback(DualKerasCallback):
    """Applies expansion-aware pruning during `model.fit` and logs the spectral health of every pruned layer.

    One class for both Kerases: it is a Keras 3 callback that also implements the hooks tf_keras' `fit` asks of a
    callback. With tf_keras it does the work of tfmot's `UpdatePruningStep` (first step 0, masks re-applied at epoch
    end); with Keras 3 it also keeps each wrapper's `pruning_step` variable (written at every epoch end and at the
    end of training, so a model saved then resumes at the right step).

    Place it before CSVLogger / TensorBoard in the callbacks list so that they see its `logs` entries. Each epoch
    adds, per pruned layer L (in the schedule's criterion, representation and gate view; Delta_R of the unweighted
    union graphs for plain tfmot layers): ``sparsity/L`` (fraction of zeros), ``stopped/L`` (1.0 once held) and
    ``min_<criterion>/L`` (the worst graph's value, dimensionless). With ``log_graphs=True`` also, per monitored graph
    G, ``delta_r/G``, ``delta_s/G`` and ``spectral_gap/G``; those values are always in `events` and TensorBoard.

    Args:
        verbose: 0 (silent, default) or 1 (one printed line per pruning event).
        log_dir: Optional folder for a TensorBoard writer with per-pruning-step curves of every graph (TensorFlow's
            summary writer: it imports TensorFlow, on any Keras 3 backend).
        method: Eigensolver path (keras_expander.expansion.spectral), default "auto".
        log_graphs: Also write every graph's values into `logs` (default False: one line of the progress bar per
            layer stays short).
        holdout: (x, y) arrays, a held-out batch for ``stop_rule="tolerance"``: x as the model's input, y integer
            labels of shape (N,) or one-hot (N, classes). Accuracy reads the outputs as Keras' accuracy metrics do
            (`keras_expander.predictions`): the argmax of several outputs; a single output as class 1 when its
            sigmoid probability is > 0.5 or its logit > 0, against labels 0 / 1.

    Attributes:
        events: List of `PruningEvent`, one per pruning step per layer, in order.
        learning_trend: Under ``stop_rule="tolerance"``, the `decision.LearningTrend` of the held-out accuracies
            measured while every layer was at most `decision.CALIBRATION_SPARSITY` sparse, and every `frequency`
            steps over the later half of the steps before `begin_step` (fitted when the first layer passes it;
            None before, or with fewer than 4 such measurements). A `StillLearningWarning` says
            when it rises by more than the tolerance over the rest of the schedule.

    Raises:
        ValueError: `verbose` not 0 or 1, or `holdout` not a pair of arrays of the same length; (at `set_model`)
            a plain tfmot wrapper uses an `ExpanderPruningSchedule` (it would prune by magnitude in-graph and never
            run the expansion check; wrap with `keras_expander.prune_expander`); (at `on_train_begin`) a layer's
            schedule has ``stop_rule="tolerance"`` and no `holdout` was given, or an output or labels the held-out
            accuracy cannot read (`keras_expander.predictions.output_reading`: a single output through tanh, a
            softmax over one unit, multi-label sigmoid outputs, labels outside the classes).
    """

    train_batch_hooks = True

    def __init__(self, verbose: int = 0, log_dir: str | None = None, method: str = "auto", log_graphs: bool = False,
                 holdout=None):
        super().__init__()
        self.prunable_layers = []
        if verbose not in (0, 1):
            raise ValueError(f"Argument `verbose` must be 0 or 1. Received: verbose={verbose!r}")
        if holdout is not None:
            pair = isinstance(holdout, (tuple, list)) and len(holdout) == 2
            if not pair or len(np.asarray(holdout[0])) != len(np.asarray(holdout[1])) or not len(holdout[1]):
                raise ValueError(f"Argument `holdout` must be a pair (x, y) of arrays of the same non-zero length. "
                                 f"Received: holdout of type {type(holdout).__name__}"
                                 + (f" with lengths {len(holdout[0])} and {len(holdout[1])}" if pair else ""))
            holdout = (np.asarray(holdout[0]), np.asarray(holdout[1]))
        self.verbose = verbose
        self.log_graphs = bool(log_graphs)
        self.holdout = holdout
        self._holdout_history = []  # held-out accuracies of this fit's pruning steps, oldest first (tolerance rule)
        self._holdout_steps = []  # the training step of each of those measurements
        self._calibration = ([], [])  # (steps, accuracies) measured while no layer was past CALIBRATION_SPARSITY
        self._tolerance_schedules = []  # the schedules with stop_rule="tolerance" (on_train_begin)
        self._pre_pruning = None  # (begin_step, frequency) for the unpruned measurements before begin_step
        self.learning_trend: decision_lib.LearningTrend | None = None
        # How the model's outputs become predicted labels, and `holdout`'s labels as class indices (on_train_begin).
        self._holdout_reading = self._holdout_labels = None
        self._committed_target = {}  # layer name -> last committed target sparsity (tolerance rule)
        self.log_dir = log_dir
        self.method = method
        self.events: list[PruningEvent] = []
        self._writer = None
        self._expanders = []
        self._epoch_start = 0  # pruning step before the epoch's first batch
        self._iterations_at_epoch_start = 0  # optimizer steps then
        self._steps_per_execution = 1
        self._autotuned_execution = False
        self._bar_in_place = False  # Keras' progress bar is redrawn in place (verbose=1)
        self._bar_open = False  # ... and its line is not finished
        self._warned_graphs: set[str] = set()
        self._slow_hook_filter = _ExpectedSlowBatchHook()
        self._retrace_filter = _ExpectedTrainStepRetrace()

    def set_model(self, model):
        super().set_model(model)
        wrappers = pruning_wrappers(model)
        if any(is_expander(layer) for layer in wrappers) and hasattr(model, "train_function"):
            # A train step traced by an earlier fit that ran (or failed) without this callback is traced again.
            model.train_function = None
        for layer in wrappers:
            if is_expander(layer):
                layer.callback_attached = True
            elif isinstance(layer.pruning_schedule, ExpanderPruningSchedule):
                raise ValueError(f"Layer {layer.name!r} is a tfmot PruneLowMagnitude wrapper with an "
                                 f"ExpanderPruningSchedule; tfmot would prune it by magnitude without the expansion "
                                 f"check. Wrap it with keras_expander.prune_expander(...) instead.")

    def on_train_begin(self, logs=None):
        self.prunable_layers = pruning_wrappers(self.model)
        if not self.prunable_layers:
            raise ValueError(f"ExpanderPruningCallback found no pruned layer in model {self.model.name!r}, so nothing "
                             f"would be pruned. Call fit on the model that keras_expander.prune_expander(...) "
                             f"returned, not on the original model.")
        if any(getattr(variable, "_value", 0) is None for variable in getattr(self.model, "variables", ())):
            # Keras' JAX trainer takes the values out of the variables at the first step of fit / evaluate /
            # predict and puts them back at the end (keras/src/backend/jax/trainer.py, _purge_model_variables,
            # jax_state_sync); an error in that first step leaves them out.
            raise RuntimeError(f"Model {self.model.name!r} has lost its weights: an earlier fit, evaluate or predict "
                               f"on the JAX backend failed in its first step, and Keras does not put the weights "
                               f"back then. Rebuild the model (or load it from a saved file) and fit again.")
        for layer in self.prunable_layers:
            if is_expander(layer):
                layer.callback_attached = True
                if layer.pruning_schedule.stop_rule == "tolerance" and self.holdout is None:
                    raise ValueError(f"Layer {layer.layer.name!r} has stop_rule='tolerance' (the default), which "
                                     f"tests each pruning step on held-out data: pass ExpanderPruningCallback("
                                     f"holdout=(x_val, y_val)), or choose a spectral rule such as "
                                     f"ExpanderPruningSchedule(stop_rule='hold'). Received: holdout=None")
            if int(variable_value(layer.pruning_step)) == -1:  # a new model starts at step 0, a resumed one at its
                layer.pruning_step.assign(0)
        logging.getLogger("tensorflow").addFilter(self._slow_hook_filter)  # only while this fit runs
        logging.getLogger("tensorflow").addFilter(self._retrace_filter)
        self._steps_per_execution = self._execution_length()
        self._autotuned_execution = bool(getattr(self.model, "_autotune_steps_per_execution", False))
        # Keras' progress bar (verbose=1) redraws its line in place wherever its Progbar says so: on a terminal, and
        # also on any POSIX system, so when stdout is a file or a pipe too.
        if self._tf_keras_model():
            from keras_expander.frameworks import tf_keras

            progbar = tf_keras.utils.Progbar
        else:
            progbar = keras.utils.Progbar
        self._bar_in_place = self.params.get("verbose") == 1 and bool(progbar(1)._dynamic_display)
        self._sync_clock()
        self._holdout_history = []
        self._holdout_steps = []
        self._calibration = ([], [])
        self.learning_trend = None
        self._committed_target = {}
        self._tolerance_schedules = [layer.pruning_schedule for layer in self._expanders
                                     if layer.pruning_schedule.stop_rule == "tolerance"]
        # (begin_step, frequency) of the first tolerance schedule: the unpruned model is measured at its pruning
        # frequency over the later half of the steps before it (the calibration phase's unconfounded part).
        first = min(self._tolerance_schedules, key=lambda schedule: schedule.begin_step, default=None)
        self._pre_pruning = (first.begin_step, first.frequency) if first and self.holdout is not None else None
        if self.holdout is not None and any(is_expander(layer) and layer.pruning_schedule.stop_rule == "tolerance"
                                            for layer in self.prunable_layers):
            self._holdout_reading, self._holdout_labels = self._read_outputs()
        if self.log_dir and self._writer is None:
            from keras_expander.frameworks import tf  # TensorBoard's writer: the one use of TensorFlow here

            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_end(self, logs=None):
        logging.getLogger("tensorflow").removeFilter(self._slow_hook_filter)
        logging.getLogger("tensorflow").removeFilter(self._retrace_filter)
        if self._writer is not None:
            self._writer.flush()
        self._write_keras3_steps()
        for layer in self.prunable_layers:
            if is_expander(layer):
                self._bake_keras3_masks(layer)
                self._report_unfinished_schedule(layer)
                layer.callback_attached = False
        # Keras reuses the traced train step in a later fit; dropping it makes the wrappers check again that this
        # callback is there (a fit without it would otherwise train with frozen masks, silently).
        self.model.train_function = None

    def _execution_length(self) -> int:
        """Optimizer steps per call of the train function (`steps_per_execution`); Keras calls the batch hooks once
        per call. tf_keras keeps it in a variable (autotuned with "auto", shortened for an epoch's last call)."""
        variable = getattr(self.model, "_steps_per_execution", None)
        if variable is not None and hasattr(variable, "numpy"):
            return int(variable.numpy())
        return int(getattr(self.model, "steps_per_execution", 1) or 1)

    def _attached_model(self):
        """The model with its variables' values attached: during `fit` on JAX, Keras keeps them outside the
        model, and the `model` property of a Keras callback syncs them back (keras.callbacks.Callback.model), after
        which writes to them reach the next train step; elsewhere it is just the model. Called before this callback
        reads or writes variables in a batch hook."""
        return self.model

    @staticmethod
    def _bake_keras3_masks(layer) -> None:
        """Writes mask * weights into a Keras 3 wrapper's matrices (it applies its masks as the layer reads them,
        so the stored pruned weights may have moved with the optimizer's momentum since); tfmot's wrapper does this
        itself."""
        if not hasattr(layer, "pruning_obj"):
            layer.apply_masks()

    def _keras3_expanders(self) -> list:
        # tfmot's wrapper counts its own steps in the graph; the Keras 3 wrapper's step is kept by this callback.
        return [layer for layer in self._expanders if not hasattr(layer, "pruning_obj")]

    def _optimizer_iterations(self) -> int:
        """The optimizer's step count, the authority on steps (read only where a Keras 3 wrapper needs it)."""
        return int(variable_value(self.model.optimizer.iterations)) if self._keras3_expanders() else 0

    def _write_keras3_steps(self) -> None:
        steps = self._epoch_start + self._optimizer_iterations() - self._iterations_at_epoch_start
        for layer in self._keras3_expanders():
            layer.pruning_step.assign(steps)

    def _report_unfinished_schedule(self, layer) -> None:
        """Warns when training ended before the schedule's end_step and the layer was not held by the stop rule:
        its sparsity is short of the target, and nothing else would say so."""
        schedule = layer.pruning_schedule
        step = int(variable_value(layer.pruning_step))
        if schedule.end_step == -1 or step >= schedule.end_step or float(variable_value(layer.expansion_stopped)):
            return
        done = any(event.layer == layer.layer.name for event in self.events)
        warn_user(
            f"Layer {layer.layer.name!r}: training ended at step {step}, before the schedule's end_step "
            f"{schedule.end_step} (steps are optimizer steps, one per batch); its sparsity is "
            f"{mask_sparsity(layer):.4f}, not the target {schedule.final_sparsity:.4f}"
            + ("" if done else ", and no pruning step was reached at all") + ". Lower end_step (e.g. to "
            "0.7 x epochs x batches per epoch) or train longer.")

    def on_epoch_begin(self, epoch, logs=None):
        self._sync_clock()

    def _sync_clock(self) -> None:
        # Within an epoch the step is counted from the batch index (a variable read per batch costs about 1 ms);
        # resynchronise it with the layers' pruning_step once per epoch.
        self._expanders = [layer for layer in self.prunable_layers if is_expander(layer)]
        self._epoch_start = int(variable_value(self._expanders[0].pruning_step)) if self._expanders else 0
        self._iterations_at_epoch_start = self._optimizer_iterations()

    def on_train_batch_begin(self, batch, logs=None):
        if not self._expanders:
            return
        # `batch` indexes the first of the `steps_per_execution` optimizer steps that the next call of the train
        # function runs. tfmot's wrapper increments pruning_step before the forward pass, so they run at steps
        # first .. last; the pruning turns among them are taken now (with steps_per_execution = k, up to k - 1
        # steps early), so that pruning steps stay optimizer steps.
        first = self._epoch_start + batch + 1
        length = self._execution_length() if self._autotuned_execution else self._steps_per_execution
        last = first + length - 1
        if self.params.get("steps"):  # the epoch's last call may run fewer steps
            last = min(last, self._epoch_start + self.params["steps"])
        self._bar_open = self._bar_in_place and batch > 0
        for step in range(first, last + 1):
            calibrating = False
            if self._pre_pruning and self._calibration is not None:
                begin, frequency = self._pre_pruning
                calibrating = begin / 2 <= step < begin and (begin - step) % frequency == 0
            if not calibrating and not any(layer.pruning_schedule.is_pruning_turn(step) for layer in self._expanders):
                continue
            self._attached_model()
            if calibrating:
                    self._calibration[0].append(step)
                    self._calibration[1].append(self._holdout_accuracy())
            if self.holdout is not None and any(layer.pruning_schedule.stop_rule == "tolerance"
                                                and layer.pruning_schedule.is_pruning_turn(step)
                                                and not float(variable_value(layer.expansion_stopped))
                                                for layer in self._expanders):
                # Once per step, before any layer commits: every layer is judged on the same model.
                self._holdout_history.append(self._holdout_accuracy())
                self._holdout_steps.append(step)
                self._check_learning_trend(step)
            for layer in self._expanders:
                if not layer.pruning_schedule.is_pruning_turn(step):
                    continue
                # An integer step: the schedule computes in numpy (no graph to retrace, no TensorFlow).
                should_prune, target = layer.pruning_schedule(step)
                if bool(should_prune):
                    with spectral.single_threaded_blas():
                        self._prune_layer(layer, float(target), step)

    def _check_learning_trend(self, step: int) -> None:
        """Collects the held-out measurements of the calibration phase (every layer at most CALIBRATION_SPARSITY
        sparse: pruning there costs nothing measurable, so they follow the unpruned model's learning curve; with
        the measurements of the unpruned model before begin_step); when it ends, fits `learning_trend` and warns
        once if the model is still learning by more than the tolerance over what remains of the schedule (the
        tolerance rule's reference, the best accuracy of this fit, then lags what the model would reach
        unpruned)."""
        if self.learning_trend is not None or self._calibration is None:
            return
        if max(self._committed_target.values(), default=0.0) <= decision_lib.CALIBRATION_SPARSITY:
            self._calibration[0].append(step)
            self._calibration[1].append(self._holdout_history[-1])
            return
        trend = decision_lib.learning_trend(*self._calibration)
        self._calibration = None  # judged once per fit
        if trend is None:
            return
        self.learning_trend = trend
        schedules = self._tolerance_schedules
        end_step = max((s.end_step for s in schedules if s.end_step != -1), default=None)  # -1: constant_sparsity
        left = max(0, end_step - step) if end_step is not None else None
        tolerance = min(s.tolerance for s in schedules)
        if not trend.still_learning or (left is not None and trend.gain(left) <= tolerance):
            return
        projection = (f", {trend.gain(left):+.1f} points over the {left:,} steps left to end_step" if left is not None
                      else "")
        warn_user(f"ExpanderPruningCallback: the model is still learning while it is pruned: held-out accuracy "
                  f"rises {trend.slope:+.2f} +- {trend.standard_error:.2f} points per 1,000 steps "
                  f"({trend.measurements} measurements at steps {trend.first_step}-{trend.last_step}, "
                  f"{trend.first_accuracy:.1f} % -> {trend.last_accuracy:.1f} % on the fitted line){projection}. "
                  + ("tolerance_reference='trend' credits the best held-out accuracy of this fit with the gain this "
                     "trend projects, an extrapolation, "
                     if any(s.tolerance_reference == "trend" for s in schedules) else
                     "stop_rule='tolerance' measures drops against the best held-out accuracy of this fit, which "
                     "lags what the model would reach unpruned, ")
                  + "so it may prune past the knee. Prune a converged model "
                  "(begin_step after held-out accuracy levels off) or fine-tune longer after end_step.",
                  StillLearningWarning)

    def _prune_layer(self, layer, target: float, step: int) -> None:
        schedule: ExpanderPruningSchedule = layer.pruning_schedule
        old_sparsity = mask_sparsity(layer)
        plan = None
        if schedule.stop_rule == "tolerance":  # decided first: a pause needs no weights read
            # The model as trained up to this step: right after a step, before any fine-tuning, accuracy says little
            # about where it recovers to (results/stop_rule_knee.md, candidate_tolerance rules).
            committed = self._committed_target.get(layer.layer.name, old_sparsity)
            credit = None
            if schedule.tolerance_reference == "trend" and self.learning_trend is not None:
                credit = [decision_lib.projected_gain(self.learning_trend, t) for t in self._holdout_steps]
            plan = decision_lib.tolerance_plan(self._holdout_history, schedule.tolerance_window, schedule.tolerance,
                                               target, schedule.next_target(committed), schedule.final_sparsity,
                                               schedule.is_last_turn(step), credit)
            if not plan.prune:
                self._pause(layer, step, target, old_sparsity, plan)
                return
            target = plan.target
        self._bake_keras3_masks(layer)
        current = layers_lib.layer_matrices(layer)
        weights = {key: np.asarray(variable.numpy(), dtype=np.float64)
                   for key, variable in layers_lib.matrix_variables(layer).items()}
        verdict = decision_lib.decide(current.layer, current.gates, weights, target, step,
                                      decision_lib.DecisionSettings.of(schedule, layer.mask_policy,
                                                                       layer.min_degree, layer.seed, self.method,
                                                                       layer.allocation))
        if not verdict.finite_weights:  # stop pruning this layer, keep training
            warn_user(f"Pruning of layer {current.layer!r} stopped at step {step}: {verdict.reason}.")
        if not verdict.commit:
            self._hold(layer, step, target, old_sparsity, verdict, verdict.reason)
            return
        layer.commit_masks(verdict.masks)
        self._committed_target[layer.layer.name] = target
        if schedule.stop_rule != "tolerance":
            for name in sorted(set(verdict.below) - self._warned_graphs):
                self._warned_graphs.add(name)
                warn_user(f"Graph {name}: {schedule.criterion} = {verdict.below[name]:.4g} < margin "
                          f"{schedule.margin} at step {step} (sparsity {target:.4f}); expansion is lost past this "
                          f"point.")
        sparsity = mask_sparsity(layer)
        self._record(PruningEvent(step, current.layer, target, sparsity, True, verdict.worst_value,
                                  verdict.worst_graph, verdict.reason, verdict.kept_share, _graphs(verdict.values),
                                  holdout_accuracy=self._step_holdout_accuracy(schedule)))
        if self.verbose:
            self._say(f"step {step}: {current.layer} sparsity {old_sparsity:.4f} -> {sparsity:.4f}, min "
                      f"{schedule.criterion} {verdict.worst_value:.4g} at {verdict.worst_graph}"
                      + (f"; {verdict.reason}" if verdict.reason else ""))
        if plan is not None and plan.hold:
            self._hold(layer, step, schedule.final_sparsity, sparsity, verdict, plan.reason)

    def _pause(self, layer, step: int, target: float, sparsity: float, plan: decision_lib.TolerancePlan) -> None:
        """stop_rule="tolerance" without a step: a pause, or at the schedule's last step the layer's hold."""
        if plan.hold:
            self._stop(layer, sparsity)
        self._record(PruningEvent(step, layer.layer.name, target, sparsity, False, float("nan"), "", plan.reason,
                                  paused=plan.paused,
                                  holdout_accuracy=self._step_holdout_accuracy(layer.pruning_schedule)))
        if self.verbose:
            self._say(f"step {step}: {layer.layer.name} {'paused' if plan.paused else 'held'} at sparsity "
                      f"{sparsity:.4f} (target {target:.4f}): {plan.reason.removeprefix('paused: ')}")

    def _step_holdout_accuracy(self, schedule) -> float:
        """This step's held-out measurement for an event of a ``stop_rule="tolerance"`` layer, else nan."""
        return self._holdout_history[-1] if schedule.stop_rule == "tolerance" else float("nan")

    def _read_outputs(self):
        """(rule, labels): the rule that reads the model's outputs as labels (`output_reading`) and `holdout`'s
        labels as class indices, checked against it before the first step, so that an unreadable head fails at the
        start of fit."""
        x, y = self.holdout
        width = None
        if not getattr(self.model, "outputs", None):  # a subclassed model: its output width shows on data
            width = int(self._predict(x[:1]).shape[-1])
        reading = output_reading(self.model, width, y, name="holdout")
        return reading, reading.labels(y, "holdout")

    def _holdout_accuracy(self) -> float:
        """Accuracy in [0, 1] of the model on `holdout`, its outputs read by `_holdout_reading`, in inference
        mode."""
        predicted = self._holdout_reading.predicted(self._predict(self.holdout[0]))
        return float(np.mean(predicted == self._holdout_labels))

    def _predict(self, x) -> np.ndarray:
        """The model's outputs on `x` in inference mode, as a numpy array (from a tf_keras or any Keras 3 backend's
        tensor; a PyTorch output still carries its autograd graph)."""
        outputs = self.model(x, training=False)
        return np.asarray(outputs) if self._tf_keras_model() else keras.ops.convert_to_numpy(outputs)

    @staticmethod
    def _stop(layer, sparsity: float) -> None:
        """Holds the layer for good at `sparsity` (its schedule reads these variables)."""
        layer.expansion_stopped.assign(1.0)
        layer.expansion_sparsity_cap.assign(sparsity)

    def _hold(self, layer, step, target, sparsity, verdict: decision_lib.Decision, reason: str) -> None:
        self._stop(layer, sparsity)
        self._record(PruningEvent(step, layer.layer.name, target, sparsity, False, verdict.worst_value,
                                  verdict.worst_graph, reason, graphs=_graphs(verdict.values),
                                  holdout_accuracy=self._step_holdout_accuracy(layer.pruning_schedule)))
        if self.verbose:
            self._say(f"step {step}: {layer.layer.name} held at sparsity {sparsity:.4f} (target {target:.4f}): "
                      f"{reason}")

    def _tf_keras_model(self) -> bool:
        return any(hasattr(layer, "pruning_obj") for layer in self.prunable_layers)

    def _say(self, line: str) -> None:
        # Through Keras' own output. A progress bar redrawn in place leaves its line unfinished (no newline), so
        # the first line after it starts a fresh one instead of being glued onto the bar. io_utils is Keras'
        # progress-aware output (not re-exported publicly).
        if self._tf_keras_model():
            from tf_keras.src.utils import io_utils
        else:
            from keras.src.utils import io_utils

        prefix = "\n" if self._bar_open else ""
        self._bar_open = False
        io_utils.print_msg(prefix + line)

    def _record(self, event: PruningEvent) -> None:
        self.events.append(event)
        if self._writer is None:
            return
        from keras_expander.frameworks import tf

        with self._writer.as_default(step=event.step):
            tf.summary.scalar(f"sparsity/{event.layer}", event.sparsity)
            tf.summary.scalar(f"stopped/{event.layer}", float(not event.committed and not event.paused))
            tf.summary.scalar(f"paused/{event.layer}", float(event.paused))
            tf.summary.scalar(f"kept_share/{event.layer}", event.kept_share)
            if not math.isnan(event.holdout_accuracy):
                tf.summary.scalar(f"holdout_accuracy/{event.layer}", event.holdout_accuracy)
            for name, value in event.graphs.items():
                for key, number in value.items():
                    tf.summary.scalar(f"{key}/{name}", number)

    def layer_logs(self) -> dict[str, float]:
        """Current sparsity, stop state and worst criterion value of every pruned layer (and, with `log_graphs`,
        every graph's values), as written into `logs`."""
        with spectral.single_threaded_blas():
            return self._layer_logs()

    def _layer_logs(self) -> dict[str, float]:
        logs = {}
        for layer in self.prunable_layers:
            schedule = layer.pruning_schedule
            expander = is_expander(layer)
            matrices = layers_lib.layer_matrices(layer)
            logs[f"sparsity/{matrices.layer}"] = mask_sparsity(layer)
            logs[f"stopped/{matrices.layer}"] = float(variable_value(layer.expansion_stopped)) if expander else 0.0
            criterion = schedule.criterion if expander else "delta_r"
            try:
                values = decision_lib.criterion_values(
                    matrices, criterion, schedule.representation if expander else "unweighted",
                    schedule.gate_view if expander else decision_lib.DecisionSettings.gate_view, self.method)
            except ValueError:
                continue  # NaN weights: already reported when pruning stopped
            logs[f"min_{criterion}/{matrices.layer}"] = decision_lib.worst_per_layer(values, criterion)
            if self.log_graphs:
                for name, value in values.items():
                    for key in ("delta_r", "delta_s", "spectral_gap"):
                        logs[f"{key}/{name}"] = value[key]
        return logs

    def on_epoch_end(self, epoch, logs=None):
        self._write_keras3_steps()
        for layer in self.prunable_layers:  # as tfmot's UpdatePruningStep: saved weights are mask * weights
            if hasattr(layer, "pruning_obj"):
                layer.pruning_obj.weight_mask_op()
            else:
                self._bake_keras3_masks(layer)
        if logs is not None:
            logs.update(self.layer_logs())
