"""Benchmark: where does each stop rule land against the accuracy knee? ("How far can I prune?", issue 22.)

Per (cell, data set, seed): a dense model is trained for --dense-epochs; then, for every remaining-edges target q of
the grid, the trained dense model is pruned with the default mask policy (degree_floor_magnitude) by
ExpanderPruningSchedule(stop_rule="monitor") over the first 60 % of --prune-epochs and fine-tuned for the rest, and
its test accuracy is measured. The dense reference (q = 100) is the same trained model trained --prune-epochs more
without pruning, so that every point has the same budget. The knee of a (cell, data set) is the smallest grid q
whose mean test accuracy over the seeds is within 1 point of the dense mean.

Spectral rules are measured on the run to the smallest q: at every pruning step a recorder reads the committed
masks (with stop_rule="hold" the candidate of that step; the trajectory is the same up to the first hold) and
measures every graph in every gate view, plus the accuracy of a held-out batch (--holdout samples of the
validation split). A rule holds at the first step where it fails; its answer `rule_q` is the q of the step before
(100 when the first step fails), the smallest q when it never fails. Its accuracy `rule_accuracy` is that seed's
test accuracy at `rule_q`, interpolated linearly in q between the seed's grid points (dense at q = 100): the
benchmark does not train a run per rule. Rules:
  delta_r_<view>[_m<margin>]  min Delta_R over the view's graphs < margin (views: per_gate, union, stacked)
  delta_s_<view>               min Delta_S < 0
  relative_delta_r_<view>_<c>  min over graphs of Delta_R / Ramanujan bound < c (a margin that scales with degree)
  delta_r_<view>_trend         Delta_R extrapolated linearly from the last two steps to the next one < 0
  candidate_tolerance_<points> held-out accuracy right after the step (the candidate, not fine-tuned) more than
                               <points> below the dense model's
stop_rule="tolerance" changes the trajectory (it pauses while held-out accuracy has not recovered and resumes one
schedule step at a time), so each of its settings is a training run of its own per seed, to the smallest q, with
ExpanderPruningCallback(holdout=...) on the recorder's held-out batch; its rule_q is the q the run ends at and its
rule_accuracy that run's test accuracy (measured, not interpolated):
  tolerance_<points>           stop_rule="tolerance", tolerance=<points> (tolerance_window=3, the default)
  tolerance_<points>_window1   the same judging single measurements (tolerance_window=1)
  tolerance_1_trend            tolerance_reference="trend": the best of the fit credited with the unpruned model's
                               gain projected from the calibration phase (decision.projected_gain)
The default rule (the one ExpanderPruningSchedule's defaults implement) is marked in the outputs.

Writes <out>/<name>.json (rows per (cell, dataset, rule): cell, dataset, rule {name, settings}, knee_q,
rule_q, rule_accuracy, dense_accuracy, chance_accuracy, no_conclusion, seeds, and per-seed values; a (cell, dataset)
whose dense model is near chance gets no knee and no verdicts, only the reason), <out>/<name>.md and
<out>/<name>.png (accuracy vs q per (cell, dataset) with the knee and each rule's stop marked). Every run
is kept in --runs/<key>.json and every dense model in --runs/<key>.weights.h5; a rerun skips them (resumable).

  python benchmarks/stop_rule_knee.py --data-dir ../shared/data   # all cells, both data sets, 3 seeds (speech 6)
  python benchmarks/stop_rule_knee.py --report-only               # tables and plot from the runs
  python benchmarks/stop_rule_knee.py --prune-epochs-mnist 2 --prune-epochs-speech 4 --seeds-speech 3 \
      --runs runs/stop_rule_knee_short --name stop_rule_knee_short --data-dir ../shared/data   # 1/3 the fine-tuning
Each run uses one process; two processes over disjoint --cells / --datasets with --threads 1 share a --runs
folder and use both cores of a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from benchmarks.recipes import chance_check, label_counts, labels_from_counts  # noqa: E402
from keras_expander.files import write_atomic  # noqa: E402

CELLS = ("lstm", "gru", "simple_rnn")
DATASETS = ("mnist", "cifar10", "speech")
Q_GRID = (50.0, 30.0, 20.0, 15.0, 10.0, 7.0, 5.0)
VIEWS = ("per_gate", "union", "stacked")
# name -> settings; evaluated by `rule_fails` on one step's measurements.
RULES = {
    **{f"delta_r_{view}": {"kind": "delta", "criterion": "delta_r", "view": view, "margin": 0.0} for view in VIEWS},
    "delta_r_union_m0.5": {"kind": "delta", "criterion": "delta_r", "view": "union", "margin": 0.5},
    "delta_r_union_m-0.5": {"kind": "delta", "criterion": "delta_r", "view": "union", "margin": -0.5},
    **{f"delta_s_{view}": {"kind": "delta", "criterion": "delta_s", "view": view, "margin": 0.0}
       for view in ("per_gate", "union")},
    **{f"relative_delta_r_{view}_0.05": {"kind": "relative", "criterion": "delta_r", "view": view, "margin": 0.05}
       for view in ("per_gate", "union")},
    **{f"delta_r_{view}_trend": {"kind": "trend", "criterion": "delta_r", "view": view, "margin": 0.0}
       for view in ("per_gate", "union")},
    "candidate_tolerance_1": {"kind": "candidate_tolerance", "points": 1.0},
    "candidate_tolerance_2": {"kind": "candidate_tolerance", "points": 2.0},
}
# Rules that change the trajectory (stop_rule="tolerance" pauses and resumes), so each is a training run of its own
# per seed, to the smallest q of the grid: its rule_q is the q it ends at, its accuracy that run's test accuracy.
LIVE_RULES = {
    **{f"tolerance_{points:g}": {"kind": "live", "stop_rule": "tolerance", "tolerance": points, "tolerance_window": 3}
       for points in (0.5, 1.0)},
    "tolerance_1_window1": {"kind": "live", "stop_rule": "tolerance", "tolerance": 1.0, "tolerance_window": 1},
    "tolerance_1_trend": {"kind": "live", "stop_rule": "tolerance", "tolerance": 1.0, "tolerance_window": 3,
                          "tolerance_reference": "trend"},
}
LIVE_RULE_SETTINGS = ("tolerance", "tolerance_window", "tolerance_reference")
# A (cell, dataset) whose dense model is less than this many points above chance accuracy has not learnt the task at
# the budget: it has no knee to land on, so its rows are shown but not counted (SimpleRNN on speech: 18 % on 12
# classes; sequential CIFAR-10 at 50 % on 10 classes is counted).
MIN_POINTS_OVER_CHANCE = 25.0
SEQUENTIAL_MNIST_NOTE = ("MNIST IDX files, row-wise 28 x 28; the first --mnist-train training images train, the "
                         "last 5,000 are validation (the held-out batch is drawn from them), test 10,000")
SEQUENTIAL_CIFAR10_NOTE = ("CIFAR-10 JPEG archive, row-wise 32 x 96 (32 RGB pixels a row); the first --cifar-train "
                            "training images train, the last 5,000 are validation, test 10,000")
SPEECH_NOTE = ("Speech Commands v0.02 official test set only (4,890 clips), split by speaker 80/10/10 into "
               "train/validation/test; 49 x 40 log-mel frames")


def default_rule_name() -> str:
    """The rule that ExpanderPruningSchedule's defaults implement (stop rule and its settings)."""
    import inspect

    from keras_expander.pruning.schedule import ExpanderPruningSchedule

    defaults = {name: p.default for name, p in inspect.signature(ExpanderPruningSchedule).parameters.items()}
    for name, rule in LIVE_RULES.items():
        if rule["stop_rule"] == defaults["stop_rule"] and all(
                rule.get(key, "best") == defaults[key] for key in LIVE_RULE_SETTINGS):
            return name
    for name, rule in RULES.items():
        if (rule["kind"] == "delta" and rule["criterion"] == defaults["criterion"]
                and rule["view"] == defaults["gate_view"] and rule["margin"] == defaults["margin"]):
            return name
    raise RuntimeError(f"no rule of RULES matches the schedule defaults {defaults}")


def load(dataset: str, data_dir, train_images: dict):
    """(train, validation, test) pairs of float32 (N, T, F) inputs and int labels; `train_images` gives the
    training images of mnist and cifar10 (the validation split is the last 5,000 of their training set)."""
    from keras_expander import datasets

    if dataset == "speech":
        splits = datasets.speech_commands(data_dir)
        return splits["train"], splits["validation"], splits["test"]
    loader = datasets.sequential_mnist if dataset == "mnist" else datasets.sequential_cifar10
    (x_train, y_train), test = loader(data_dir)
    count = train_images[dataset]
    return (x_train[:count], y_train[:count]), (x_train[-5000:], y_train[-5000:]), test


def holdout_accuracy(model, holdout) -> float:
    """Accuracy in [0, 1] of `model` (argmax of its logits) on the held-out pair (x, y)."""
    logits = model(holdout[0], training=False).numpy()
    return float(np.mean(np.argmax(logits, axis=1) == holdout[1]))


class StepRecorder:
    """Records, at each pruning step of the callback, q, every view's graph metrics and the held-out accuracy of the
    model as trained so far (before the step) and with the step's masks (right after it)."""

    def __init__(self, pruning_callback, holdout, schedule):
        from keras_expander.pruning.callback import DualKerasCallback

        recorder = self

        class _Before(DualKerasCallback):  # placed before the pruning callback: sees the model before the step
            train_batch_hooks = True

            def on_train_batch_begin(self, batch, logs=None):
                recorder.batches += 1  # the pruning step of this batch (a fresh model starts at step 0)
                if schedule.is_pruning_turn(recorder.batches):
                    recorder.latest = recorder.holdout_accuracy(self.model)

        class _After(DualKerasCallback):  # placed after it
            train_batch_hooks = True

            def on_train_batch_begin(self, batch, logs=None):
                if len(pruning_callback.events) > recorder.seen:
                    recorder.seen = len(pruning_callback.events)
                    recorder.record(self.model, pruning_callback.events[-1])

        self.before, self.after = _Before(), _After()
        self.latest = float("nan")
        self.batches = 0
        self.holdout = holdout
        self.seen = 0
        self.steps: list[dict] = []
        self.reference_accuracy = None

    def holdout_accuracy(self, model) -> float:
        return holdout_accuracy(model, self.holdout)

    def record(self, model, event) -> None:
        from keras_expander.expansion import analysis
        from keras_expander.pruning.wrapper import pruning_wrappers

        layer = pruning_wrappers(model)[0]
        views = {}
        for view in VIEWS:
            reports = analysis.analyze_layer(layer, gate_views=(view,))
            views[view] = {
                "delta_r": min(r.unweighted.delta_r for r in reports),
                "delta_s": min(r.unweighted.delta_s for r in reports),
                "relative_delta_r": min(r.unweighted.delta_r / r.unweighted.ramanujan_bound for r in reports)}
        self.steps.append({"step": event.step, "q": 100.0 * (1.0 - event.sparsity), "views": views,
                           "holdout_accuracy": self.holdout_accuracy(model),
                           "holdout_accuracy_before_step": self.latest})


class DenseCurveRecorder:
    """Records the held-out accuracy of a model trained without pruning every `frequency` batches, at the steps
    where a pruning run of the same budget measures its own (before its pruning step): the dense counterfactual."""

    def __init__(self, holdout, frequency: int):
        from keras_expander.pruning.callback import DualKerasCallback

        recorder = self

        class _Curve(DualKerasCallback):
            train_batch_hooks = True

            def on_train_batch_begin(self, batch, logs=None):
                if recorder.batches % frequency == 0 and recorder.batches <= 20 * frequency:
                    recorder.points.append({"step": recorder.batches,
                                            "holdout_accuracy": holdout_accuracy(self.model, recorder.holdout)})
                recorder.batches += 1

        self.callback = _Curve()
        self.holdout = holdout
        self.batches = 0
        self.points: list[dict] = []


def rule_fails(rule: dict, steps: list[dict], index: int, reference_accuracy: float) -> bool:
    """Whether `rule` holds the layer at pruning step `index` of a recorded trajectory (nan counts as failing)."""
    if rule["kind"] == "candidate_tolerance":  # the candidate's accuracy, right after the step
        return not 100 * (reference_accuracy - steps[index]["holdout_accuracy"]) <= rule["points"]
    value = steps[index]["views"][rule["view"]][rule["criterion"] if rule["kind"] != "relative" else
                                                "relative_delta_r"]
    if rule["kind"] == "trend":
        if index == 0:
            return not value >= rule["margin"]
        before = steps[index - 1]["views"][rule["view"]][rule["criterion"]]
        return not 2 * value - before >= rule["margin"]  # the next step's value, extrapolated
    return not value >= rule["margin"]


def rule_stop_q(rule: dict, run: dict) -> float:
    """Remaining edges q (%) where `rule` leaves the layer on a recorded trajectory (see the module docstring)."""
    steps = run["steps"]
    for index in range(len(steps)):
        if rule_fails(rule, steps, index, run["reference_holdout_accuracy"]):
            return 100.0 if index == 0 else steps[index - 1]["q"]
    return steps[-1]["q"]


def holdout_batch(data, seed: int, size: int):
    """The held-out batch of a seed: `size` samples of the validation split, drawn without replacement."""
    x_val, y_val = data[1]
    pick = np.random.default_rng(seed).choice(len(x_val), size=min(size, len(x_val)), replace=False)
    return x_val[pick], y_val[pick]


def train_run(cell: str, dataset: str, seed: int, q: float | None, data, args, live: str | None = None) -> dict:
    """One run: the dense pre-training (q None), its continuation without pruning (q 100) or the pre-trained model
    pruned to q and fine-tuned (with stop_rule="monitor", or with the stop rule of LIVE_RULES[live]); returns its
    record."""
    import keras_expander as ke
    from benchmarks.recipes import build_model
    from keras_expander.frameworks import tf_keras

    (x_train, y_train), _, (x_test, y_test) = data
    classes = int(max(y_train.max(), y_test.max()) + 1)
    tf_keras.utils.set_random_seed(seed)
    model = build_model(cell, args.units, x_train.shape[1], x_train.shape[2], classes)
    dense_weights = os.path.join(args.runs, f"{cell}-{dataset}-seed{seed}-dense.weights.h5")
    epochs = args.dense_epochs[dataset]
    callbacks, recorder = [], None
    if q is not None:
        model.load_weights(dense_weights)
        epochs = args.prune_epochs[dataset]
    frequency = max(1, int(0.6 * epochs * math.ceil(len(x_train) / args.batch_size)) // 20)
    dense_curve = None
    if q == 100:  # the dense counterfactual's held-out accuracy at the pruning runs' steps
        dense_curve = DenseCurveRecorder(holdout_batch(data, seed, args.holdout), frequency)
        callbacks.append(dense_curve.callback)
    if q is not None and q < 100:
        rule = LIVE_RULES[live] if live else {"stop_rule": "monitor"}
        schedule = ke.ExpanderPruningSchedule(final_sparsity=1.0 - q / 100.0, begin_step=0, end_step=20 * frequency,
                                              frequency=frequency, stop_rule=rule["stop_rule"],
                                              **{key: rule[key] for key in LIVE_RULE_SETTINGS if key in rule})
        model = ke.prune_expander(model, schedule, seed=seed)
        pruning = ke.ExpanderPruningCallback(holdout=holdout_batch(data, seed, args.holdout) if live else None)
        callbacks.append(pruning)
        if q == min(args.q) and not live:
            recorder = StepRecorder(pruning, holdout_batch(data, seed, args.holdout), schedule)
            callbacks = [recorder.before, pruning, recorder.after]
    model.compile(optimizer=tf_keras.optimizers.Adam(args.learning_rate),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    if recorder is not None:
        recorder.reference_accuracy = recorder.holdout_accuracy(model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # monitor-mode crossing warnings: the recorder keeps Delta
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=epochs, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    if q is None:
        model.save_weights(dense_weights)
    elif q < 100:
        model = ke.strip_pruning(model)
        model.compile(loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    weights = [model.layers[1].cell.kernel.numpy(), model.layers[1].cell.recurrent_kernel.numpy()]
    record = {"cell": cell, "dataset": dataset, "seed": seed, "q": "pretrained" if q is None else q, "live": live,
              "test_accuracy": float(accuracy), "test_label_counts": label_counts(y_test), "seconds": seconds,
              "epochs": epochs,
              "measured_q": 100.0 * sum(np.count_nonzero(w) for w in weights) / sum(w.size for w in weights)}
    if recorder is not None:
        record.update(steps=recorder.steps, reference_holdout_accuracy=recorder.reference_accuracy)
    if dense_curve is not None:
        record["holdout_curve"] = dense_curve.points
    if live:
        record["events"] = [{"step": e.step, "target": e.target_sparsity, "sparsity": e.sparsity,
                             "committed": e.committed, "reason": e.reason, "holdout_accuracy": e.holdout_accuracy}
                            for e in pruning.events]
    return record


def interpolate_accuracy(runs: list[dict], q: float) -> float:
    """Test accuracy of one seed at q (%), linear in q between its grid points (dense at q = 100)."""
    points = sorted((r["q"], r["test_accuracy"]) for r in runs if r["q"] != "pretrained")
    return float(np.interp(q, [p[0] for p in points], [p[1] for p in points]))


def dense_verdict_check(records: list[dict], dense_accuracy: float) -> dict:
    """`chance_check` of a (cell, dataset)'s mean dense accuracy (in [0, 1]) on the test labels its runs record;
    runs made before they recorded them get a reason that says so (chance cannot be told)."""
    counts = next((r["test_label_counts"] for r in records if "test_label_counts" in r), None)
    if counts is None:
        return {"dense_accuracy": dense_accuracy, "chance_accuracy": None,
                "no_conclusion": "no conclusion: the runs do not record their test labels (made before they did), "
                                 "so chance cannot be told; rerun them in an empty --runs folder"}
    return chance_check(dense_accuracy, labels_from_counts(counts))


def summarize(records: list[dict], q_grid) -> list[dict]:
    """One row per (cell, dataset, rule) over the seeds whose whole grid is done.

    A (cell, dataset) whose dense model is near chance (`chance_check`) has no knee and no verdicts: knee_q,
    within_5_of_knee, past_knee and accuracy_within_1 are None, counted is False and no_conclusion gives the reason.
    """
    rows = []
    default = default_rule_name()
    for cell, dataset in sorted({(r["cell"], r["dataset"]) for r in records}):
        by_seed, live_runs = {}, {}
        for r in records:
            if (r["cell"], r["dataset"]) == (cell, dataset):
                if r.get("live"):
                    live_runs[(r["live"], r["seed"])] = r
                else:
                    by_seed.setdefault(r["seed"], []).append(r)
        seeds = sorted(s for s, runs in by_seed.items() if {r["q"] for r in runs} >= {"pretrained", 100.0, *q_grid})
        if not seeds:
            continue
        mean = {q: float(np.mean([next(r["test_accuracy"] for r in by_seed[s] if r["q"] == q) for s in seeds]))
                for q in ("pretrained", 100.0, *q_grid)}
        pretrained = mean.pop("pretrained")
        dense = mean[100.0]
        within = [q for q in q_grid if mean[q] >= dense - 0.01]
        check = dense_verdict_check([r for runs in by_seed.values() for r in runs], dense)
        reason = check["no_conclusion"]
        knee = None if reason else min(within) if within else 100.0
        for name, rule in {**RULES, **LIVE_RULES}.items():
            stops, accuracies = [], []
            if name in LIVE_RULES:  # measured by runs of their own
                if not all((name, s) in live_runs for s in seeds):
                    continue
                stops = [live_runs[(name, s)]["measured_q"] for s in seeds]
                accuracies = [live_runs[(name, s)]["test_accuracy"] for s in seeds]
            else:  # read from the recorded trajectory, accuracy interpolated
                for s in seeds:
                    trajectory = next(r for r in by_seed[s] if r["q"] == min(q_grid))
                    stop = rule_stop_q(rule, trajectory)
                    stops.append(stop)
                    accuracies.append(interpolate_accuracy(by_seed[s], stop))
            rule_q, rule_accuracy = float(np.mean(stops)), float(np.mean(accuracies))
            rows.append({
                "cell": cell, "dataset": dataset, "rule": {"name": name, **rule}, "default": name == default,
                "knee_q": knee, "rule_q": rule_q, "rule_accuracy": 100 * rule_accuracy,
                "dense_accuracy": 100 * dense, "pretrained_accuracy": 100 * pretrained, "seeds": seeds,
                "rule_q_per_seed": stops,
                "rule_accuracy_per_seed": [100 * a for a in accuracies],
                "mean_accuracy_by_q": {f"{q:g}": 100 * a for q, a in mean.items()},
                "chance_accuracy": None if check["chance_accuracy"] is None else 100 * check["chance_accuracy"],
                "no_conclusion": reason,
                "within_5_of_knee": None if reason else abs(rule_q - knee) <= 5.0,
                "past_knee": None if reason else rule_q < knee,
                "accuracy_within_1": None if reason else rule_accuracy >= dense - 0.01,
                "counted": not reason and 100 * (dense - check["chance_accuracy"]) >= MIN_POINTS_OVER_CHANCE,
            })
    return rows


def to_markdown(payload: dict) -> str:
    rows = payload["rows"]
    default = default_rule_name()
    # one column per (cell, dataset); a rule without runs for all of a column's seeds is left blank there
    columns = sorted({(r["cell"], r["dataset"]) for r in rows})
    first = {column: next(r for r in rows if (r["cell"], r["dataset"]) == column) for column in columns}
    lines = [f"# Stop rules against the accuracy knee, {payload['date']}", "",
             f"Reproduce: `{payload['command']}`. {payload['protocol']}", "",
             f"Data: sequential MNIST ({SEQUENTIAL_MNIST_NOTE}); sequential CIFAR-10 ({SEQUENTIAL_CIFAR10_NOTE}); "
             f"speech ({SPEECH_NOTE}). The speech test split "
             "is about 490 clips, so one clip is 0.2 points: its knees are noisy.", "",
             "Mean test accuracy (%) over the seeds by remaining edges q (%), and the knee (smallest q within 1 "
             "point of dense):", "",
             "| cell | dataset | seeds | " + " | ".join(f"q={q}" for q in rows[0]["mean_accuracy_by_q"]) +
             " | knee q |", "|---|---|---|" + "---|" * (len(rows[0]["mean_accuracy_by_q"]) + 1)]
    for row in first.values():
        lines.append(f"| {row['cell']} | {row['dataset']} | {len(row['seeds'])} | " +
                     " | ".join(f"{a:.2f}" for a in row["mean_accuracy_by_q"].values())
                     + f" | {row['no_conclusion'] or format(row['knee_q'], 'g')} |")
    names = [name for name in {**RULES, **LIVE_RULES} if any(r["rule"]["name"] == name for r in rows)]
    lines += ["", "Where each rule stops: mean rule q (%) / its accuracy minus dense (points; interpolated between "
              "grid points for the spectral and candidate rules, the run's own test accuracy for the tolerance "
              "rules, which train with the rule); **ok** = within 5 q-points of the knee and within 1 point of "
              "dense.", "",
              "| rule | " + " | ".join(f"{cell} {dataset}" for cell, dataset in columns) + " | rows ok |",
              "|---|" + "---|" * (len(columns) + 1)]
    for name in names:
        by_column = {(r["cell"], r["dataset"]): r for r in rows if r["rule"]["name"] == name}
        ok = {column: r["counted"] and r["within_5_of_knee"] and r["accuracy_within_1"]
              for column, r in by_column.items()}
        label = f"**{name}** (default)" if name == default else name
        lines.append(f"| {label} | " + " | ".join(
            f"{r['rule_q']:.1f} / {r['rule_accuracy'] - r['dense_accuracy']:+.2f}{' **ok**' if ok[c] else ''}"
            if (r := by_column.get(c)) else "-" for c in columns)
            + f" | {sum(ok.values())}/{sum(r['counted'] for r in by_column.values())} |")
    default_rows = [r for r in rows if r["default"] and r["counted"]]
    passed = [r for r in default_rows if r["within_5_of_knee"] and r["accuracy_within_1"]]
    best = max(names, key=lambda n: sum(r["counted"] and r["within_5_of_knee"] and r["accuracy_within_1"]
                                        for r in rows if r["rule"]["name"] == n))
    uncounted = [f"{r['cell']} {r['dataset']} ({r['dense_accuracy']:.2f} %)" for r in rows
                 if r["default"] and not r["counted"] and not r["no_conclusion"]]
    unjudged = [f"{cell} {dataset} ({row['no_conclusion']})" for (cell, dataset), row in first.items()
                if row["no_conclusion"]]
    lines += ["", f"**The default rule** ({default}) meets the acceptance (|rule_q - knee_q| <= 5 and rule accuracy "
              f">= dense - 1) on {len(passed)} of {len(default_rows)} rows"
              + ("." if len(passed) == len(default_rows) else
                 ": not on " + ", ".join(f"{r['cell']} {r['dataset']} (stops at q {r['rule_q']:.1f}, knee "
                                         f"{r['knee_q']:g}, {r['rule_accuracy'] - r['dense_accuracy']:+.2f} points)"
                                         for r in default_rows if r not in passed) + ".")
              + (f" The rule with the most rows met is {best}." if any(r["counted"] for r in rows) else "")
              + (f" Not counted: {', '.join(uncounted)}, whose dense model stays less than "
                 f"{MIN_POINTS_OVER_CHANCE:g} points above chance at this budget (no knee to land on)."
                 if uncounted else "")
              + (f" Not judged: {', '.join(unjudged)}." if unjudged else ""), ""]
    return "\n".join(lines)


def plot(payload: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(r["cell"], r["dataset"]) for r in payload["rows"] if r["default"]]
    figure, axes = plt.subplots(len(DATASETS), len(CELLS), figsize=(13, 7), squeeze=False)
    shown = ("delta_r_per_gate", "delta_r_union", "delta_r_stacked", "candidate_tolerance_1", "tolerance_1",
             "tolerance_1_trend")
    for axis in axes.flat:
        axis.set_visible(False)
    for cell, dataset in pairs:
        axis = axes[DATASETS.index(dataset)][CELLS.index(cell)]
        axis.set_visible(True)
        rows = [r for r in payload["rows"] if (r["cell"], r["dataset"]) == (cell, dataset)]
        curve = rows[0]["mean_accuracy_by_q"]
        qs = [float(q) for q in curve]
        axis.plot(qs, list(curve.values()), "o-", color="black", label="mean test accuracy")
        axis.axhline(rows[0]["dense_accuracy"] - 1.0, color="gray", linestyle=":", label="dense - 1 point")
        if rows[0]["knee_q"] is not None:  # None: the dense model is near chance, no knee
            axis.axvline(rows[0]["knee_q"], color="gray", linestyle="--", label="knee")
        for row in rows:
            if row["rule"]["name"] in shown:
                axis.plot(row["rule_q"], row["rule_accuracy"], "v" if row["default"] else "x", markersize=9,
                          label=row["rule"]["name"] + (" (default)" if row["default"] else ""))
        axis.set_xscale("log")
        axis.invert_xaxis()
        axis.set_title(f"{cell}, {dataset} ({len(rows[0]['seeds'])} seeds)")
        axis.set_xlabel("remaining edges q (%)")
        axis.set_ylabel("test accuracy (%)")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(record: dict) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {record['cell']} {record['dataset']} seed {record['seed']} "
          f"{'rule ' + record['live'] if record.get('live') else 'q ' + str(record['q'])}: "
          f"{100 * record['test_accuracy']:.2f} % (measured q {record['measured_q']:.2f}, {record['seconds']:.0f} s)",
          flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seeds-speech", type=int, default=6,
                        help="seeds on speech, whose 490-clip test split makes a 3-seed mean uncertain by about "
                             "1 point (default 6)")
    parser.add_argument("--q", nargs="+", type=float, default=list(Q_GRID), help="remaining edges q (%%) grid")
    parser.add_argument("--live-rules", nargs="*", choices=list(LIVE_RULES), default=list(LIVE_RULES),
                        help="stop rules measured by runs of their own (default: all)")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--mnist-train", type=int, default=20000, help="MNIST training images (default 20,000)")
    parser.add_argument("--cifar-train", type=int, default=20000, help="CIFAR-10 training images (default 20,000)")
    parser.add_argument("--dense-epochs-mnist", type=int, default=4)
    parser.add_argument("--prune-epochs-mnist", type=int, default=6)
    parser.add_argument("--dense-epochs-cifar10", type=int, default=4)
    parser.add_argument("--prune-epochs-cifar10", type=int, default=6)
    parser.add_argument("--dense-epochs-speech", type=int, default=15)
    parser.add_argument("--prune-epochs-speech", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--holdout", type=int, default=1000, help="held-out samples of the tolerance rules")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default: its choice)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", default="runs/stop_rule_knee")
    parser.add_argument("--out", default="results")
    parser.add_argument("--name", default="stop_rule_knee", help="stem of the output files (default stop_rule_knee)")
    parser.add_argument("--report-only", action="store_true", help="write the outputs from the runs kept")
    args = parser.parse_args(argv)
    args.dense_epochs = {"mnist": args.dense_epochs_mnist, "cifar10": args.dense_epochs_cifar10,
                         "speech": args.dense_epochs_speech}
    args.prune_epochs = {"mnist": args.prune_epochs_mnist, "cifar10": args.prune_epochs_cifar10,
                         "speech": args.prune_epochs_speech}
    args.seeds_of = {"mnist": args.seeds, "cifar10": args.seeds, "speech": args.seeds_speech}
    args.train_images = {"mnist": args.mnist_train, "cifar10": args.cifar_train}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.runs, exist_ok=True)
    if not args.report_only:
        from keras_expander.frameworks import import_tensorflow_quietly

        import_tensorflow_quietly()
        from keras_expander.frameworks import tf
        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        data = {}
        for seed in range(max(args.seeds_of[d] for d in args.datasets)):  # seed-major: a cut sweep leaves whole seeds
            for dataset in (d for d in args.datasets if seed < args.seeds_of[d]):
                for cell in args.cells:
                    for q in (None, 100.0, *args.q):
                        path = os.path.join(args.runs, f"{cell}-{dataset}-seed{seed}-"
                                                       f"{'pretrained' if q is None else f'q{q:g}'}.json")
                        if os.path.exists(path):
                            continue
                        if dataset not in data:
                            data[dataset] = load(dataset, args.data_dir, args.train_images)
                        record = train_run(cell, dataset, seed, q, data[dataset], args)
                        write_atomic(path, json.dumps(record))
                        report(record)
                    for name in args.live_rules:
                        path = os.path.join(args.runs, f"{cell}-{dataset}-seed{seed}-live-{name}.json")
                        if os.path.exists(path):
                            continue
                        if dataset not in data:
                            data[dataset] = load(dataset, args.data_dir, args.train_images)
                        record = train_run(cell, dataset, seed, min(args.q), data[dataset], args, live=name)
                        write_atomic(path, json.dumps(record))
                        report(record)
    records = []
    for name in sorted(os.listdir(args.runs)):
        if name.endswith(".json"):
            with open(os.path.join(args.runs, name)) as stream:
                records.append(json.load(stream))
    records = [r for r in records if r["cell"] in args.cells and r["dataset"] in args.datasets]
    rows = summarize(records, args.q)
    if not rows:
        print(f"no complete (cell, dataset, seed) grid in {args.runs} yet")
        return 1
    payload = {
        "command": "python benchmarks/stop_rule_knee.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(),
        "protocol": (f"{args.units} units; dense trained {args.dense_epochs['mnist']} epochs (MNIST) / "
                     f"{args.dense_epochs['cifar10']} (CIFAR-10) / {args.dense_epochs['speech']} (speech), "
                     f"Adam {args.learning_rate:g}, batch {args.batch_size}; "
                     f"each q pruned from the trained dense model over 60 % of {args.prune_epochs['mnist']} / "
                     f"{args.prune_epochs['cifar10']} / {args.prune_epochs['speech']} more epochs (20 pruning "
                     "steps, degree_floor_magnitude, "
                     "stop_rule='monitor') and fine-tuned for the rest; dense (q = 100) trained those epochs without "
                     "pruning. Spectral and candidate rule stops come from the run to the smallest q, their "
                     "accuracies interpolated between grid points; each tolerance rule is a run of its own to the "
                     "smallest q with that stop rule (its q and test accuracy measured); held-out batch "
                     f"{args.holdout} validation samples (at most the validation split)."),
        "default_rule": default_rule_name(), "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, f"{args.name}.json"), json.dumps(payload, indent=2))
    markdown = to_markdown(payload)
    write_atomic(os.path.join(args.out, f"{args.name}.md"), markdown)
    plot(payload, os.path.join(args.out, f"{args.name}.png"))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
