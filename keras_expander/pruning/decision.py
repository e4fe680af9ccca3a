"""The pruning decision of expansion-aware pruning: candidate masks -> measure every graph -> commit, correct or hold.

Weights, masks and settings in, a `Decision` out; no TensorFlow and no Keras (numpy, and scipy through
keras_expander.expansion.spectral), so it is tested on plain arrays. `ExpanderPruningCallback` (both Kerases) keeps
the step clock, the variable reads and writes, and the logging, and asks this module what to do at every pruning step:

1. candidate masks at the target sparsity from the layer's weights (`keras_expander.pruning.masks.compute_mask`, per
   gate);
2. the criterion (Delta_R, Delta_S or spectral gap; docs/METHOD.md section 2) of every graph of the candidate in
   the gate view (`keras_expander.expansion.graphs`);
3. the stop rule (docs/METHOD.md section 3, after Kalra et al., arXiv 2403.11100: accuracy collapses near the
   first zero crossing of Delta): ``hold`` keeps the old masks when any graph is below the margin; ``correct``
   first blends the failing graphs' masks with random edges (`CORRECTION_SHARES`) and holds only when no blend
   passes; ``monitor`` commits and reports the graphs below the margin; ``tolerance`` (the default) decides from
   the caller's held-out accuracy instead (`tolerance_plan`: prune, pause or hold), the spectral values kept as
   diagnostics.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_expander import layers as layers_lib
from keras_expander.expansion import graphs as graphs_lib
from keras_expander.expansion import spectral
from keras_expander.pruning import allocation as allocation_lib
from keras_expander.pruning import masks as masks_lib

# Shares of magnitude edges tried by stop_rule="correct", most faithful to the weights first. None below one half:
# mostly random gates cost accuracy (docs/METHOD.md, "Correct rule").
CORRECTION_SHARES = (0.9, 0.75, 0.5)


@dataclasses.dataclass(frozen=True)
class DecisionSettings:
    """What a pruning decision depends on besides the weights.

    Attributes:
        criterion: "delta_r", "delta_s" or "spectral_gap".
        representation: "unweighted" (0/1 graph) or "weighted".
        margin: Stop threshold on the criterion (dimensionless).
        gate_view: "per_gate", "union" or "stacked".
        stop_rule: "tolerance", "hold", "correct" or "monitor".
        mask_policy: One of `keras_expander.pruning.masks.MASK_POLICIES`.
        min_degree: Degree floor of "degree_floor_magnitude", >= 1.
        seed: Seed of the random mask policies and of the corrections (the step is added to it).
        method: Eigensolver path (keras_expander.expansion.spectral).
        allocation: How the layer's non-zeros are split between its graphs, one of
            `keras_expander.pruning.allocation.ALLOCATIONS`.
    """

    criterion: str = "delta_r"
    representation: str = "unweighted"
    margin: float = 0.0
    gate_view: str = "union"
    stop_rule: str = "tolerance"
    mask_policy: str = "degree_floor_magnitude"
    min_degree: int = 1
    seed: int = 0
    method: str = "auto"
    allocation: str = "uniform"

    @classmethod
    def of(cls, schedule, mask_policy: str, min_degree: int, seed: int, method: str = "auto",
           allocation: str = "uniform") -> "DecisionSettings":
        """Settings from an `ExpanderPruningSchedule` (or any object with its attributes) and a wrapper's options."""
        return cls(criterion=schedule.criterion, representation=schedule.representation, margin=schedule.margin,
                   gate_view=schedule.gate_view, stop_rule=schedule.stop_rule, mask_policy=mask_policy,
                   allocation=allocation, min_degree=min_degree, seed=seed, method=method)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do at one pruning step of one layer.

    Attributes:
        commit: True: write `masks`; False: hold the layer at its present masks and never prune it again.
        masks: Dict matrix name -> bool array (shape of the matrix) to commit; None when held.
        values: Dict graph name -> {"delta_r", "delta_s", "spectral_gap", "criterion"} of the committed candidate
            (of the rejected one when held; empty when the weights are not finite).
        worst_value: Minimum criterion over `values` (nan when undefined).
        worst_graph: The graph where it is.
        below: Graph name -> criterion of the committed graphs below the margin (``monitor`` and ``tolerance``).
        reason: Why the layer was held, or which graphs were corrected ("" when committed as proposed).
        kept_share: Under ``correct``, the share of the failing graphs' magnitude edges that the committed blend
            kept (1.0 when no correction was needed).
        finite_weights: False when the hold is for NaN or infinite weights.
    """

    commit: bool
    masks: dict | None
    values: dict
    worst_value: float
    worst_graph: str
    below: dict
    reason: str = ""
    kept_share: float = 1.0
    finite_weights: bool = True


def criterion_values(matrices: layers_lib.LayerMatrices, criterion: str, representation: str, gate_view: str,
                     method: str = "auto") -> dict[str, dict[str, float]]:
    """Measures every graph of a layer.

    Args:
        matrices: The layer's matrices and masks (keras_expander.layers).
        criterion: Key of the value the stop rule uses ("delta_r", "delta_s" or "spectral_gap").
        representation: "unweighted" or "weighted".
        gate_view: "per_gate", "union" or "stacked".
        method: Eigensolver path (keras_expander.expansion.spectral).

    Returns:
        Dict graph name -> {"delta_r", "delta_s", "spectral_gap", "criterion"} floats (nan when undefined).

    Raises:
        ValueError: NaN/inf weights; the message names the graph.
    """
    values = {}
    for g in graphs_lib.graphs_from_matrices(matrices, gate_view):
        matrix = g.weighted if representation == "weighted" else g.unweighted
        m = spectral.spectral_metrics(matrix, weighted=representation == "weighted", method=method, name=g.name)
        values[g.name] = {"delta_r": m.delta_r, "delta_s": m.delta_s, "spectral_gap": m.spectral_gap,
                          "criterion": getattr(m, criterion)}
    return values


def below_margin(values: dict[str, dict[str, float]], margin: float) -> dict[str, float]:
    """Graph name -> criterion of the graphs below `margin`; nan (undefined, e.g. an empty graph) counts as below."""
    return {name: v["criterion"] for name, v in values.items() if not v["criterion"] >= margin}


def worst_graph(values: dict[str, dict[str, float]]) -> tuple[float, str]:
    """(minimum criterion, its graph); nan ranks below every number (it never passes a margin)."""
    items = [(-math.inf if math.isnan(v["criterion"]) else v["criterion"], name) for name, v in values.items()]
    value, name = min(items)
    return (float("nan") if value == -math.inf else value), name


def worst_per_layer(values: dict[str, dict[str, float]], key: str) -> float:
    """Minimum of `key` ("delta_r", "delta_s" or "spectral_gap") over a layer's graphs, nan only when all are."""
    finite = [v[key] for v in values.values() if not math.isnan(v[key])]
    return min(finite) if finite else float("nan")


def _measure(layer: str, gates: tuple, weights: dict, masks: dict, settings: DecisionSettings) -> dict:
    candidate = layers_lib.LayerMatrices(layer=layer, gates=gates, masks=masks,
                                        kernels={key: np.where(masks[key], weights[key], 0.0) for key in weights})
    return criterion_values(candidate, settings.criterion, settings.representation, settings.gate_view,
                            settings.method)


def _correct(layer: str, gates: tuple, weights: dict, masks: dict, below: dict, settings: DecisionSettings,
             seed: int):
    """Blends the failing graphs' masks with random edges (`CORRECTION_SHARES`, largest share first).

    Returns (kept_share, masks, values) of the first blend whose graphs all stay >= margin, or None.
    """
    num_gates = len(gates)
    blocks: dict[str, set[int]] = {}  # matrix -> gate-block indices behind the failing graphs
    matrices = layers_lib.LayerMatrices(layer=layer, gates=gates, masks=masks, kernels=weights)
    for g in graphs_lib.graphs_from_matrices(matrices, settings.gate_view):
        if g.name in below:  # union / stacked / ungated graphs span every block of their matrix
            indices = [gates.index(g.gate)] if g.gate in gates else range(num_gates)
            blocks.setdefault(g.matrix, set()).update(indices)
    for share in CORRECTION_SHARES:
        blended = dict(masks)
        for key, failing in blocks.items():
            pairs = zip(np.split(masks[key], num_gates, axis=1), np.split(weights[key], num_gates, axis=1))
            blended[key] = np.concatenate([
                masks_lib.blend_with_random(m, w, share, seed=seed + index) if index in failing else m
                for index, (m, w) in enumerate(pairs)], axis=1)
        values = _measure(layer, gates, weights, blended, settings)
        if not below_margin(values, settings.margin):
            return share, blended, values
    return None


def decide(layer: str, gates: tuple, weights: dict, target: float, step: int,
           settings: DecisionSettings) -> Decision:
    """The decision at one pruning step of one layer.

    Args:
        layer: Layer name (graph names start with it).
        gates: Gate labels, e.g. ("i", "f", "c", "o"), ("z", "r", "h") or ("all",) (keras_expander.layers).
        weights: Dict matrix name -> float array of shape (left, gates * H), the dense (unmasked) weights.
        target: Target sparsity of the step, in [0, 1).
        step: Pruning step (optimizer steps); seeds the corrections.
        settings: `DecisionSettings`.

    Returns:
        A `Decision`. Non-finite weights give a hold whose reason names the graphs (masks chosen from them would be
        arbitrary).

    Raises:
        ValueError: weights whose column count is not a multiple of the gate count, or an unknown mask policy.
    """
    num_gates = len(gates)
    broken = [f"{layer}/{key}/{gate}" for key, matrix in weights.items()
              for gate, block in zip(gates, np.split(matrix, num_gates, axis=1)) if not np.isfinite(block).all()]
    if broken:
        return Decision(False, None, {}, float("nan"), broken[0], {},
                        f"NaN or infinite weights in graph(s) {', '.join(broken)}", finite_weights=False)
    targets = allocation_lib.matrix_sparsities({key: np.shape(matrix) for key, matrix in weights.items()}, num_gates,
                                               target, settings.allocation)
    masks = {key: masks_lib.compute_mask(matrix, targets[key], settings.mask_policy, num_gates=num_gates,
                                         min_degree=settings.min_degree, seed=settings.seed)
             for key, matrix in weights.items()}
    values = _measure(layer, gates, weights, masks, settings)
    worst_value, worst_name = worst_graph(values)
    below = below_margin(values, settings.margin)
    if not below or settings.stop_rule in ("monitor", "tolerance"):
        return Decision(True, masks, values, worst_value, worst_name, below)
    if settings.stop_rule == "correct":
        corrected = _correct(layer, gates, weights, masks, below, settings, seed=settings.seed + step)
        if corrected is not None:
            share, masks, values = corrected
            worst_value, worst_name = worst_graph(values)
            return Decision(True, masks, values, worst_value, worst_name, {},
                            f"corrected {', '.join(sorted(below))}: kept {share:.0%} of their magnitude edges, "
                            f"moved the rest to random entries", share)
    return Decision(False, None, values, worst_value, worst_name, below,
                    f"{settings.criterion} of {worst_name} would be {worst_value:.4g} < margin {settings.margin}"
                    + (" and no blend with random edges repaired it" if settings.stop_rule == "correct" else ""))


def smoothed_holdout(history, window: int, credit=None) -> tuple[float, float]:
    """The two held-out accuracies that ``stop_rule="tolerance"`` compares at a pruning step.

    One measurement on a held-out batch of n samples varies by about sqrt(p (1 - p) / n) (binomial sampling) plus
    what the fine-tuning steps between pruning steps move; the best single measurement of a fit is biased upward
    by the largest of those fluctuations, so a tolerance of 1 point against it pauses on noise where the batch is
    small (1.5-2 points from step to step on the 443-clip speech validation split: results/stop_rule_knee.md).
    Averaging `window` consecutive measurements shrinks both by about sqrt(window), at the price of seeing a real
    drop in full only `window` - 1 steps later.

    Args:
        history: Held-out accuracies in [0, 1] of this fit's pruning steps so far, oldest first, the present step's
            last; length >= 1.
        window: Measurements averaged, >= 1 (1: the present measurement and the best single one).
        credit: None, or the unpruned model's projected gain in accuracy (fraction, not points) at each measurement
            (`projected_gain`), shape as `history`: each earlier mean is then credited with the gain projected
            between its measurement and the present one before the largest is taken.

    Returns:
        (accuracy, reference): the mean of the last `window` measurements (of all of them while fewer were taken),
        and the largest such mean over the fit (its steps so far, this one included), each plus credit[-1] -
        credit[its last measurement] when `credit` is given. A nan measurement makes the accuracy nan, which
        pauses.

    Raises:
        ValueError: `history` empty or not 1-D, `window` not an integer >= 1, or `credit` of another length.
    """
    values = np.asarray(history, dtype=np.float64)
    if values.ndim != 1 or not len(values) or int(window) != window or window < 1:
        raise ValueError(f"smoothed_holdout needs a non-empty 1-D history and an integer window >= 1. Received: "
                         f"history of shape {values.shape}, window={window!r}")
    gains = np.zeros(len(values)) if credit is None else np.asarray(credit, dtype=np.float64)
    if gains.shape != values.shape:
        raise ValueError(f"smoothed_holdout needs one credit per measurement. Received: credit of shape "
                         f"{gains.shape} for a history of shape {values.shape}")
    window = int(window)
    means = np.array([np.mean(values[max(0, end - window):end]) for end in range(1, len(values) + 1)])
    aged = means + gains[-1] - gains
    finite = aged[~np.isnan(aged)]
    return float(means[-1]), float(finite.max()) if len(finite) else float("nan")


def tolerance_verdict(history, window: int, tolerance: float, credit=None) -> tuple[bool, str]:
    """Rule ``stop_rule="tolerance"``: pause pruning while held-out accuracy is more than `tolerance` below the
    reference.

    Args:
        history: Held-out accuracies in [0, 1] of this fit's pruning steps, oldest first; the last is of the model
            as trained up to this step (the masks committed so far, fine-tuned since; the step's candidate is not
            committed yet), the first was measured before any pruning.
        window: Measurements averaged (`smoothed_holdout`), >= 1.
        tolerance: Allowed drop in accuracy points (%), >= 0.
        credit: None (the reference is the best of this fit) or the projected gains of `smoothed_holdout`.

    Returns:
        (pause, reason): pause is True when 100 * (reference - accuracy) > tolerance, both from
        `smoothed_holdout` (a nan accuracy pauses). The caller keeps the layer's masks for this step; at the
        schedule's last step a pause is the layer's hold.

    Raises:
        ValueError: from `smoothed_holdout`.
    """
    accuracy, reference = smoothed_holdout(history, window, credit)
    drop = 100.0 * (reference - accuracy)
    if drop <= tolerance + 1e-9:  # a drop of exactly the tolerance (k / N accuracies in floating point) passes
        return False, ""
    measured = "held-out accuracy" if window == 1 else f"held-out accuracy (mean of the last {window} steps)"
    best = smoothed_holdout(history, window)[1]
    if credit is None or reference <= best:
        return True, (f"{measured} is {100 * accuracy:.2f} %, {drop:.2f} points below the best "
                      f"{100 * reference:.2f} % of this fit (tolerance {tolerance:g} points)")
    return True, (f"{measured} is {100 * accuracy:.2f} %, {drop:.2f} points below {100 * reference:.2f} %, the "
                  f"unpruned model's accuracy projected from this fit's learning trend (best {100 * best:.2f} %; "
                  f"tolerance {tolerance:g} points)")


@dataclasses.dataclass(frozen=True)
class TolerancePlan:
    """What ``stop_rule="tolerance"`` does at one pruning step of one layer.

    Attributes:
        prune: True: prune to `target` (candidate masks through `decide`); False: keep the present masks.
        target: Target sparsity in [0, 1): the step to take, or the schedule's target of this step when paused.
        hold: True: the layer stops here for good (after the step when `prune`): its sparsity is the rule's answer.
        reason: "paused: ..." for a pause, why the layer is held, or "" for a plain step.
    """

    prune: bool
    target: float
    hold: bool
    reason: str = ""

    @property
    def paused(self) -> bool:
        """Not pruned now, and not held: the layer may resume at a later step."""
        return not self.prune and not self.hold


def tolerance_plan(history, window: int, tolerance: float, scheduled_target: float, next_target: float,
                   final_sparsity: float, last_step: bool, credit=None) -> TolerancePlan:
    """The decision of ``stop_rule="tolerance"`` at one pruning step.

    While held-out accuracy is more than `tolerance` points below the reference (`tolerance_verdict`) the layer
    pauses; once recovered it takes the schedule's next step after its last committed one (`next_target`), not the
    target of the present step, so that after a pause no single step removes more edges than the schedule's own
    steps do. The schedule's last step ends the rule: a pause there, or a layer still short of `final_sparsity`, is
    a hold at that sparsity.

    Args:
        history: Held-out accuracies in [0, 1] of this fit's pruning steps, oldest first, this step's last.
        window: Measurements averaged (`smoothed_holdout`), >= 1.
        tolerance: Allowed drop in accuracy points (%), >= 0.
        scheduled_target: The base schedule's target sparsity at this step, in [0, 1).
        next_target: The schedule's first target above the layer's last committed sparsity
            (`ExpanderPruningSchedule.next_target`), in [0, 1).
        final_sparsity: The schedule's final sparsity, in [0, 1).
        last_step: Whether this is the schedule's last pruning step.
        credit: None or the projected gains of `smoothed_holdout` (``tolerance_reference="trend"``).

    Returns:
        A `TolerancePlan`.

    Raises:
        ValueError: from `smoothed_holdout`.
    """
    pause, reason = tolerance_verdict(history, window, tolerance, credit)
    if pause:
        return TolerancePlan(False, scheduled_target, last_step, reason if last_step else "paused: " + reason)
    target = min(scheduled_target, next_target)
    if last_step and target < final_sparsity - 1e-6:  # schedule targets are float32
        return TolerancePlan(True, target, True, f"the schedule ended at sparsity {target:.4f}, short of "
                                                 f"final_sparsity {final_sparsity:g}, after pauses for held-out "
                                                 f"accuracy")
    return TolerancePlan(True, target, False)


# Below this share of zeros, pruning costs no measurable held-out accuracy on any row of results/stop_rule_knee.md
# (q = 50 % is within noise of dense on every cell and data set), so the held-out measurements taken while every
# layer is at most this sparse follow the unpruned model's learning curve.
CALIBRATION_SPARSITY = 0.5
# Measurements a learning trend needs: a least-squares line through fewer says little at 1-2 points of noise each.
MIN_TREND_MEASUREMENTS = 4


@dataclasses.dataclass(frozen=True)
class LearningTrend:
    """The held-out learning curve of a model over the first pruning steps of a fit (ordinary least squares).

    Attributes:
        slope: Held-out accuracy change, points (%) per 1,000 training steps.
        standard_error: The slope's standard error (same unit), from the residuals (n - 2 degrees of freedom).
        first_step, last_step: Training steps of the first and last measurement used.
        first_accuracy, last_accuracy: The fitted line at those steps, in %.
        measurements: Measurements used (>= MIN_TREND_MEASUREMENTS).
    """

    slope: float
    standard_error: float
    first_step: int
    last_step: int
    first_accuracy: float
    last_accuracy: float
    measurements: int

    @property
    def still_learning(self) -> bool:
        """The slope is positive by more than two standard errors (about 95 % one-sided at n >= 4)."""
        return self.slope > 2.0 * self.standard_error

    def gain(self, steps: int) -> float:
        """Points (%) the trend adds over `steps` more training steps."""
        return self.slope * steps / 1000.0


def learning_trend(steps, accuracies) -> LearningTrend | None:
    """Least-squares line through held-out accuracies measured at training steps.

    Args:
        steps: Training steps of the measurements (integers, increasing), shape (n,).
        accuracies: Held-out accuracies in [0, 1], shape (n,); nan measurements are left out.

    Returns:
        The `LearningTrend`, or None with fewer than MIN_TREND_MEASUREMENTS finite measurements or all at one step.
    """
    t = np.asarray(steps, dtype=np.float64)
    y = 100.0 * np.asarray(accuracies, dtype=np.float64)
    keep = ~np.isnan(y)
    t, y = t[keep], y[keep]
    if len(t) < MIN_TREND_MEASUREMENTS or np.ptp(t) == 0:
        return None
    centred = t - t.mean()
    slope = float(np.dot(centred, y - y.mean()) / np.dot(centred, centred))
    residuals = y - (y.mean() + slope * centred)
    error = float(np.sqrt(np.dot(residuals, residuals) / (len(t) - 2) / np.dot(centred, centred)))
    return LearningTrend(1000.0 * slope, 1000.0 * error, int(t[0]), int(t[-1]),
                         float(y.mean() + slope * (t[0] - t.mean())), float(y.mean() + slope * (t[-1] - t.mean())),
                         len(t))


# Standard errors taken off the calibration slope before it is projected: a rise the calibration cannot tell from
# noise projects no gain, and the reference stays the best of the fit.
TREND_SHRINK = 1.0


def projected_gain(trend: LearningTrend | None, step: int) -> float:
    """Accuracy (fraction) the unpruned model is projected to gain from the end of the calibration phase to `step`.

    Learning curves flatten: the gain rate is taken to fall as 1 / (1 + elapsed / span), where span is the
    calibration phase's length in steps, so the projection is rate * span * ln(1 + elapsed / span) (the integral
    of that rate): over one more span it adds 69 % of what a straight line would, over four 40 %. The rate is the
    calibration slope less TREND_SHRINK standard errors, at least 0.

    Args:
        trend: The calibration phase's `LearningTrend` (None: no projection).
        step: Training step, >= 0.

    Returns:
        The projected gain in [0, 1); 0 before the calibration phase ends or without a trend.
    """
    if trend is None or step <= trend.last_step:
        return 0.0
    rate = max(0.0, trend.slope - TREND_SHRINK * trend.standard_error) / 1000.0 / 100.0  # fraction per step
    span = max(1, trend.last_step - trend.first_step)
    return rate * span * math.log1p((step - trend.last_step) / span)
