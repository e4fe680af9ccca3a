"""`ExpanderPruningSchedule`: a pruning schedule in tfmot's interface whose sparsity is capped by an expansion check.

The base schedule is tfmot's `PolynomialDecay` (Zhu and Gupta 2017, "To prune, or not to prune") or
`ConstantSparsity`, with tfmot's keyword arguments and tfmot's formulas (reproduced in `_base_schedule`, so that the
Keras 3 path needs no tfmot; a test compares both on every step of a schedule). The expansion check itself runs in
`keras_expander.pruning.callback.ExpanderPruningCallback` (it needs scipy); its verdict reaches the schedule through two
variables owned by the pruned layer (`PruneExpander`): ``expansion_stopped`` and ``expansion_sparsity_cap``.
`__call__` with a Python or numpy step (the callback's call) computes in numpy float32 and imports no TensorFlow,
so the schedule serves Keras 3 on every backend; with a TensorFlow tensor (tfmot's interface) it builds TensorFlow
ops, eagerly or inside a `tf.function` graph.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from keras_expander.expansion.graphs import GATE_VIEWS
from keras_expander.frameworks import warn_user

BASE_SCHEDULES = ("polynomial_decay", "constant_sparsity")
CRITERIA = ("delta_r", "delta_s", "spectral_gap")
REPRESENTATIONS = ("unweighted", "weighted")
STOP_RULES = ("hold", "correct", "monitor", "tolerance")
TOLERANCE_REFERENCES = ("best", "trend")


def _real(name: str, value) -> float:
    """A finite real number (Python or numpy scalar) as a float, or a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"Argument `{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)


def _integer(name: str, value) -> int:
    """An integer (Python or numpy scalar) as an int, or a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Argument `{name}` must be an integer. Received: {name}={value!r}")
    return int(value)


class UnreachedSparsityWarning(UserWarning):
    """A polynomial_decay schedule whose last pruning step comes before `end_step`, short of `final_sparsity`."""


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"Argument `{name}` must be one of {allowed}. Received: {name}={value!r}")


class ExpanderPruningSchedule:
    """Pruning schedule that stops a layer where pruning starts to cost accuracy, with its expansion measured.

    Decision 1 of expansion-aware pruning (docs/METHOD.md section 3, after Kalra et al., arXiv 2403.11100, whose
    finding is that accuracy collapses near the first zero crossing of Delta): follow the base schedule, but before
    a pruning step is committed the callback measures `criterion` on every graph of the layer (in `gate_view`) for
    the candidate mask. With ``stop_rule="hold"`` a step that would bring any graph below `margin` is not
    committed: the layer is held at its last sparsity with all graphs >= margin and never pruned further. With
    ``stop_rule="correct"`` the callback first tries to repair the failing graphs at the same sparsity: it keeps
    the largest 90, 75 or 50 % of their magnitude edges and moves the rest to random entries
    (`keras_expander.pruning.masks.blend_with_random`), commits the first blend whose graphs all stay >= margin, and
    holds the layer only when none does. With ``stop_rule="monitor"`` the base schedule's target is reached and a
    warning is issued once per graph that crosses. With ``stop_rule="tolerance"`` (the default) the spectral values
    are diagnostics only: at each pruning step the model as trained so far is measured on a held-out batch
    (``ExpanderPruningCallback(holdout=...)``); while that accuracy, averaged over the last `tolerance_window`
    pruning steps, is more than `tolerance` points below the best such average of this fit (the first measurement
    is taken before any pruning) the layer pauses at its present masks,
    and once it has recovered it resumes with the schedule's next step after its last committed one
    (`next_target`). A pause at the schedule's last step, or a layer still short of `final_sparsity` there, is
    held: that sparsity is the rule's answer. The decision itself is `keras_expander.pruning.decision.decide`.

    The default is ``tolerance`` because the accuracy knee moves with the fine-tuning budget and only a rule that
    measures the model sees that; the spectral rules (Delta_R of the ``union`` graphs, margin 0, ``hold``: the
    paper's first zero crossing) stop near the same q at any budget. Where each lands against the knee, per cell
    and data set: results/stop_rule_knee.md (`benchmarks/stop_rule_knee.py`).

    Use it through `keras_expander.prune_expander` and train with `keras_expander.ExpanderPruningCallback`:

    ```python
    schedule = ExpanderPruningSchedule(final_sparsity=0.9, begin_step=0, end_step=2000)
    model = keras_expander.prune_expander(model, schedule)
    model.fit(x, y, callbacks=[keras_expander.ExpanderPruningCallback(holdout=(x_val, y_val))])
    ```

    Args:
        final_sparsity: Target fraction of zeros in [0, 1).
        begin_step: First step (optimizer iterations) at which pruning may happen, >= 0.
        end_step: Last pruning step, where polynomial_decay reaches `final_sparsity`, > begin_step; required with
            polynomial_decay. With constant_sparsity, -1 or None (the default) prunes until training ends.
        initial_sparsity: Sparsity at `begin_step` (polynomial_decay), in [0, 1).
        power: Exponent of the polynomial decay, tfmot default 3.
        frequency: Prune every `frequency` steps, >= 1 (tfmot default 100).
        base: "polynomial_decay" or "constant_sparsity" (tfmot semantics).
        criterion: "delta_r" (Ramanujan gap, Hoang et al. ICLR 2023), "delta_s" (2 sqrt(mu0 - 1) - mu1) or
            "spectral_gap" (mu0 - mu1).
        representation: "unweighted" (0/1 graph) or "weighted" (|W * mask| with mean non-zero entry 1).
        margin: The stop threshold on the criterion (dimensionless, default 0.0).
        gate_view: Graphs of gated cells (LSTM, GRU) monitored: "union" (default: an edge where any gate has one),
            "per_gate" (the layer is as good as its worst gate) or "stacked" (see `keras_expander.expansion.graphs`).
        stop_rule: "tolerance" (default; needs ``ExpanderPruningCallback(holdout=...)``), "hold", "correct" or
            "monitor".
        tolerance: Under ``stop_rule="tolerance"``, the allowed drop of held-out accuracy (averaged over
            `tolerance_window` steps) below the best such average of this fit, in points (%), >= 0 (default 1.0).
        tolerance_window: Under ``stop_rule="tolerance"``, how many pruning steps' held-out accuracies are
            averaged, the present one and those before it, both for the accuracy judged and for the best of the fit
            (`keras_expander.pruning.decision.smoothed_holdout`), an integer >= 1 (default 3; 1 judges single
            measurements, which pause on noise when the held-out batch is small).
        tolerance_reference: Under ``stop_rule="tolerance"``, what a drop is measured against: "best" (the best
            averaged held-out accuracy of this fit) or "trend" (that best, credited with the gain the unpruned model
            is projected to make since, from the learning trend of the calibration phase:
            `keras_expander.pruning.decision.projected_gain`; the same as "best" for a model that has stopped
            learning).

    Raises:
        ValueError: any argument out of range or not among the allowed values, polynomial_decay without
            `end_step`, ``stop_rule="correct"`` with ``representation="weighted"`` (moved edges start at weight 0,
            so a weighted graph cannot see them), or a polynomial_decay `frequency` larger than
            ``end_step - begin_step`` (the only pruning step would be `begin_step`, at `initial_sparsity`); the
            message names the argument and the value.

    Warns:
        UnreachedSparsityWarning: polynomial_decay with ``end_step - begin_step`` not a multiple of `frequency`:
            the last pruning step comes before `end_step`, and the warning gives the sparsity reached there.
    """

    def __init__(self, final_sparsity: float, begin_step: int = 0, end_step: int | None = None,
                 initial_sparsity: float = 0.0, power: float = 3.0, frequency: int = 100,
                 base: str = "polynomial_decay", criterion: str = "delta_r", representation: str = "unweighted",
                 margin: float = 0.0, gate_view: str = "union", stop_rule: str = "tolerance", tolerance: float = 1.0,
                 tolerance_window: int = 3, tolerance_reference: str = "best"):
        _choice("base", base, BASE_SCHEDULES)
        _choice("criterion", criterion, CRITERIA)
        _choice("representation", representation, REPRESENTATIONS)
        _choice("gate_view", gate_view, GATE_VIEWS)
        _choice("stop_rule", stop_rule, STOP_RULES)
        _choice("tolerance_reference", tolerance_reference, TOLERANCE_REFERENCES)
        if stop_rule == "correct" and representation == "weighted":
            raise ValueError("Argument `stop_rule='correct'` needs representation='unweighted': the edges it moves "
                             "start at weight 0, so the weighted graph would not contain them. Received: "
                             "representation='weighted'")
        final_sparsity, initial_sparsity = _real("final_sparsity", final_sparsity), _real("initial_sparsity",
                                                                                           initial_sparsity)
        for name, value in (("final_sparsity", final_sparsity), ("initial_sparsity", initial_sparsity)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"Argument `{name}` must be in [0, 1). Received: {name}={value!r}")
        if end_step is None and base == "polynomial_decay":
            # tfmot's PolynomialDecay has no default end_step either: the decay needs a step to end at.
            raise ValueError(f"Argument `end_step` is required with base='polynomial_decay': the optimizer step at "
                             f"which the sparsity reaches final_sparsity={final_sparsity:g}, e.g. epochs * "
                             f"steps_per_epoch of your fit (or less, to fine-tune after pruning); base="
                             f"'constant_sparsity' prunes until training ends without it. Received: end_step=None")
        end_step = -1 if end_step is None else end_step
        begin_step, end_step, frequency = (_integer("begin_step", begin_step), _integer("end_step", end_step),
                                           _integer("frequency", frequency))
        if begin_step < 0:
            raise ValueError(f"Argument `begin_step` must be an integer >= 0. Received: begin_step={begin_step!r}")
        if frequency < 1:
            raise ValueError(f"Argument `frequency` must be an integer >= 1. Received: frequency={frequency!r}")
        if (end_step != -1 and end_step <= begin_step) or (end_step == -1 and base == "polynomial_decay"):
            raise ValueError(f"Argument `end_step` must be an integer > begin_step={begin_step} (or -1 with "
                             f"base='constant_sparsity'). Received: end_step={end_step!r}")
        margin, power, tolerance = _real("margin", margin), _real("power", power), _real("tolerance", tolerance)
        if power <= 0:
            raise ValueError(f"Argument `power` must be > 0. Received: power={power!r}")
        if tolerance < 0:
            raise ValueError(f"Argument `tolerance` must be >= 0 (accuracy points). Received: tolerance={tolerance!r}")
        tolerance_window = _integer("tolerance_window", tolerance_window)
        if tolerance_window < 1:
            raise ValueError(f"Argument `tolerance_window` must be an integer >= 1 (pruning steps). Received: "
                             f"tolerance_window={tolerance_window!r}")
        self.final_sparsity = float(final_sparsity)
        self.begin_step = begin_step
        self.end_step = end_step
        self.initial_sparsity = float(initial_sparsity)
        self.power = float(power)
        self.frequency = frequency
        self.base = base
        self.criterion = criterion
        self.representation = representation
        self.margin = float(margin)
        self.gate_view = gate_view
        self.stop_rule = stop_rule
        self.tolerance = tolerance
        self.tolerance_window = tolerance_window
        self.tolerance_reference = tolerance_reference
        self._stopped = None
        self._sparsity_cap = None
        self._warned_unbound = False
        if base == "polynomial_decay":
            self._check_reachable()

    def _check_reachable(self) -> None:
        """Refuses or reports a polynomial_decay whose pruning steps (every `frequency` from `begin_step`) miss
        `end_step`, where the target sparsity is reached."""
        span = self.end_step - self.begin_step
        last = self.begin_step + span // self.frequency * self.frequency
        if last == self.end_step:
            return
        reached = self.target_at(last)
        if self.frequency > span:
            raise ValueError(f"Argument `frequency` must be at most end_step - begin_step = {span}: the only pruning "
                             f"step would be begin_step={self.begin_step}, where polynomial_decay's sparsity is "
                             f"initial_sparsity={self.initial_sparsity:g}, so the layer would never reach "
                             f"final_sparsity={self.final_sparsity:g}. Received: frequency={self.frequency}")
        warn_user(f"ExpanderPruningSchedule: end_step - begin_step = {span} is not a multiple of "
                  f"frequency={self.frequency}, so the last pruning step is {last}, where the sparsity is "
                  f"{reached:.4f}, not final_sparsity={self.final_sparsity:g}. Set end_step="
                  f"{last + self.frequency} (or {last}).", UnreachedSparsityWarning)

    def bind_state(self, stopped, sparsity_cap) -> None:
        """Connects the schedule to the stop-rule variables of the layer it prunes.

        Called by `PruneExpander.build`; each pruned layer owns its own copy of the schedule and its own variables,
        which are saved with the model (`.keras`, SavedModel, TF checkpoints) so a resumed run keeps its stop state.

        Args:
            stopped: Scalar float32 variable (tf.Variable or Keras 3 Variable), 1.0 once the stop rule has held the
                layer.
            sparsity_cap: Scalar float32 variable, the highest sparsity the layer may reach (1.0 = no cap).
        """
        self._stopped = stopped
        self._sparsity_cap = sparsity_cap

    @property
    def is_bound(self) -> bool:
        """True once `bind_state` connected the schedule to a layer's variables."""
        return self._stopped is not None

    def __call__(self, step):
        """Returns (should_prune, sparsity) for a training step, as tfmot's schedules do.

        Args:
            step: The pruning step (optimizer iterations): a Python or numpy integer, or a scalar integer
                TensorFlow tensor (tfmot's interface; works inside a `tf.function`).

        Returns:
            (bool, numpy float32) for an integer step, (bool tensor, float32 tensor) for a tensor: prune at this
            step, and the target sparsity min(base(step), cap). A held layer (``stopped``) never prunes again.
        """
        tensor = not isinstance(step, numbers.Integral)
        should_prune, sparsity = self._base_schedule_tf(step) if tensor else self._base_schedule(step)
        if not self.is_bound:
            if not self._warned_unbound:
                self._warned_unbound = True
                warn_user("ExpanderPruningSchedule is used without its layer state: it behaves as its base "
                          "schedule and checks no expansion. Wrap layers with keras_expander.prune_expander(...) "
                          "and train with keras_expander.ExpanderPruningCallback().")
            return should_prune, sparsity
        if tensor:
            from keras_expander.frameworks import tf

            should_prune = tf.logical_and(should_prune, self._stopped < 0.5)
            return should_prune, tf.minimum(sparsity, self._sparsity_cap)
        stopped, cap = (float(np.asarray(variable.numpy())) for variable in (self._stopped, self._sparsity_cap))
        return should_prune and stopped < 0.5, min(sparsity, np.float32(cap))

    def _base_schedule(self, step: int) -> tuple[bool, np.float32]:
        """tfmot 0.8.1's `PolynomialDecay` / `ConstantSparsity` `__call__` for an integer step (a test compares it
        with tfmot and `_base_schedule_tf` on every step)."""
        return self.is_pruning_turn(step), np.float32(self.target_at(step))

    def _base_schedule_tf(self, step):
        """tfmot 0.8.1's `PolynomialDecay` / `ConstantSparsity` `__call__`, op for op (pruning_schedule.py)."""
        from keras_expander.frameworks import tf

        step = tf.cast(step, tf.int64)
        in_range = tf.logical_and(tf.greater_equal(step, self.begin_step),
                                  tf.logical_or(tf.less_equal(step, self.end_step), tf.less(self.end_step, 0)))
        should_prune = tf.logical_and(in_range, tf.equal(tf.math.floormod(step - self.begin_step, self.frequency), 0))
        if self.base == "constant_sparsity":
            return should_prune, tf.constant(self.final_sparsity, dtype=tf.float32)
        progress = tf.minimum(1.0, tf.maximum(0.0, tf.math.divide(tf.cast(step - self.begin_step, tf.float32),
                                                                  self.end_step - self.begin_step)))
        decay = tf.pow(1 - progress, self.power)
        sparsity = (self.initial_sparsity - self.final_sparsity) * decay + self.final_sparsity
        return should_prune, sparsity

    def is_pruning_turn(self, step: int) -> bool:
        """Python twin of tfmot's `_should_prune_in_step` (begin <= step <= end, every `frequency` steps).

        Lets the callback skip the schedule call on the batches where nothing can happen (tests check that both
        agree).
        """
        in_range = step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def target_at(self, step: int) -> float:
        """The base schedule's target sparsity at `step`, computed in float32 as tfmot's ops compute it (the formula
        of `_base_schedule_tf`, op for op)."""
        if self.base == "constant_sparsity":
            return float(np.float32(self.final_sparsity))
        one, zero = np.float32(1.0), np.float32(0.0)
        progress = min(one, max(zero, np.float32(step - self.begin_step) / np.float32(self.end_step - self.begin_step)))
        decay = np.power(one - progress, np.float32(self.power))
        return float(np.float32(self.initial_sparsity - self.final_sparsity) * decay + np.float32(self.final_sparsity))

    def next_target(self, committed: float) -> float:
        """The sparsity of the first pruning step of the base schedule whose target exceeds `committed`.

        ``stop_rule="tolerance"`` pauses a layer whose held-out accuracy has not recovered; when it resumes, it
        takes the schedule's steps one at a time from where it paused instead of jumping to the target of the
        present step, so that no single step removes more edges than the schedule's own steps do.

        Args:
            committed: The last sparsity committed to the layer, in [0, 1).

        Returns:
            A sparsity in [0, 1): `final_sparsity` when every step's target is at or below `committed`.
        """
        if self.base == "constant_sparsity":
            return self.final_sparsity
        for step in range(self.begin_step, self.end_step + 1, self.frequency):
            target = self.target_at(step)
            if target > committed + 1e-7:  # tfmot computes targets in float32
                return target
        return self.final_sparsity

    def is_last_turn(self, step: int) -> bool:
        """True when `step` is the base schedule's last pruning step (never for an open-ended constant_sparsity)."""
        return self.end_step != -1 and self.is_pruning_turn(step) and step + self.frequency > self.end_step

    def get_config(self) -> dict:
        """Returns {"class_name": ..., "config": {...}} in tfmot's schedule format; `config` mirrors `__init__`."""
        return {"class_name": self.__class__.__name__, "config": {
            "final_sparsity": self.final_sparsity, "begin_step": self.begin_step, "end_step": self.end_step,
            "initial_sparsity": self.initial_sparsity, "power": self.power, "frequency": self.frequency,
            "base": self.base, "criterion": self.criterion, "representation": self.representation,
            "margin": self.margin, "gate_view": self.gate_view, "stop_rule": self.stop_rule,
            "tolerance": self.tolerance, "tolerance_window": self.tolerance_window,
            "tolerance_reference": self.tolerance_reference}}

    @classmethod
    def from_config(cls, config: dict) -> "ExpanderPruningSchedule":
        """Rebuilds a schedule from `get_config()["config"]` (or the whole `get_config()` output), without
        repeating the `UnreachedSparsityWarning` its construction gave (each pruned layer gets such a copy)."""
        config = config.get("config", config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnreachedSparsityWarning)
            return cls(**config)
