"""Benchmark: dense vs tfmot magnitude pruning vs expansion-aware pruning on real sequential MNIST.

Same seed, epochs, data and pruning steps for every method. For each cell (LSTM, SimpleRNN) and each sparsity
(default 90 % and 95 % of kernel and recurrent kernel):
  dense          no pruning
  tfmot          tfmot prune_low_magnitude + PolynomialDecay + UpdatePruningStep (its own in-graph top-k)
  expander       keras_expander degree_floor_magnitude + ExpanderPruningSchedule(stop_rule="monitor")
plus one expander run per cell with stop_rule="hold" (default criterion delta_r) that reports where it stopped,
and one with stop_rule="correct" that reports how many pruning steps it repaired and how far it got.

Writes results/pruning_quality.json and results/pruning_quality.md (test accuracy, measured sparsity, worst
Delta_R / Delta_S per layer and per graph, seconds per epoch, expander/tfmot time ratio) and prints the table.

  python benchmarks/pruning_quality.py --epochs 6 --out results
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tfmot's own prune_low_magnitude (the baseline here) looks RNN cells up among tf.keras' classes, so in this
# process tf.keras must be tf_keras; set before TensorFlow is imported. keras_expander itself needs no such setting.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import keras_expander as ke  # noqa: E402
from benchmarks.recipes import CELLS, VALIDATION_SIZE, build_model, chance_check, measure_trained_model  # noqa: E402
from keras_expander import datasets  # noqa: E402
from keras_expander.expansion import analysis  # noqa: E402
from keras_expander.files import write_atomic  # noqa: E402
from keras_expander.frameworks import tf_keras, tfmot  # noqa: E402


class EpochTimer(tf_keras.callbacks.Callback):
    """Wall time of every epoch, in seconds."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def train_one(method: str, cell: str, sparsity: float, stop_rule: str, args, data,
              mask_policy: str = "degree_floor_magnitude", base: str = "polynomial_decay", seed: int | None = None,
              cosine_decay: bool = False, allocation: str = "uniform", model_path: str | None = None) -> dict:
    """Trains one configuration and returns its row of the results table.

    Args:
        method: "dense", "tfmot" (prune_low_magnitude + PolynomialDecay) or "expander" (prune_expander).
        cell: "lstm", "simple_rnn" or "gru".
        sparsity: Target sparsity of kernel and recurrent kernel, in [0, 1).
        stop_rule: Stop rule of the expander schedule ("monitor", "hold", "correct").
        args: Namespace with epochs, units, batch_size, frequency, seed and learning_rate (default 1e-3).
        data: ((x_train, y_train), (x_val, y_val), (x_test, y_test)); x of shape (N, T, F) float32 (the model's
            input shape and class count follow the data).
        mask_policy: keras_expander mask policy of the expander method.
        base: Base schedule of the expander method: "polynomial_decay" (pruned from step 0 to 67 % of training)
            or "constant_sparsity" (the final sparsity from step 0: a fixed mask for the random policies).
        seed: Seed of initialisation, data order and random masks; None uses args.seed.
        cosine_decay: Adam's learning rate decays to 0 along a cosine over the whole training (Keras CosineDecay).
        allocation: Sparsity allocation of the expander method (`keras_expander.ALLOCATIONS`).
        model_path: Where to save the trained (stripped) model as `.keras`, or None.

    Returns:
        A dict: configuration, test accuracy in [0, 1], measured sparsity, worst Delta values, seconds per epoch.
    """
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data
    seed = args.seed if seed is None else seed
    tf_keras.utils.set_random_seed(seed)
    model = build_model(cell, args.units, timesteps=x_train.shape[1], features=x_train.shape[2],
                        classes=int(max(y_train.max(), y_test.max())) + 1)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    end_step = args.frequency * max(1, int(0.67 * steps_per_epoch * args.epochs) // args.frequency)
    callbacks = []
    if method == "tfmot":
        schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity,
                                                        begin_step=0, end_step=end_step, frequency=args.frequency)
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    elif method == "expander":
        schedule = ke.ExpanderPruningSchedule(final_sparsity=sparsity, begin_step=0, end_step=end_step,
                                              frequency=args.frequency, stop_rule=stop_rule, base=base)
        model = ke.prune_expander(model, schedule, mask_policy=mask_policy, seed=seed, allocation=allocation)
        expander_callback = ke.ExpanderPruningCallback()
        callbacks.append(expander_callback)
    learning_rate = args.learning_rate
    if cosine_decay:
        learning_rate = tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps_per_epoch * args.epochs)
    timer = EpochTimer()
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_val, y_val),
              callbacks=callbacks + [timer], verbose=2)
    if model_path:
        strip = {"expander": ke.strip_pruning, "tfmot": tfmot.sparsity.keras.strip_pruning}.get(method, lambda m: m)
        strip(model).save(model_path)
    accuracy, report, summaries = measure_trained_model(model, x_test, y_test)
    summary = summaries[0]
    row = {
        "cell": cell, "method": method, "target_sparsity": sparsity if method != "dense" else 0.0,
        "stop_rule": stop_rule if method == "expander" else "", "seed": seed,
        "mask_policy": mask_policy if method == "expander" else "", "base": base if method == "expander" else "",
        "allocation": allocation if method == "expander" else "",
        "test_accuracy": float(accuracy),
        "measured_sparsity": summary.sparsity, "worst_delta_r": summary.worst_delta_r,
        "worst_delta_s": summary.worst_delta_s, "worst_weighted_delta_r": summary.worst_weighted_delta_r,
        "isolated_nodes": summary.isolated_nodes,
        "seconds_per_epoch": float(np.mean(timer.seconds)),
        "graphs": {r.name: {"delta_r": r.unweighted.delta_r, "delta_s": r.unweighted.delta_s,
                            "weighted_delta_r": r.weighted.delta_r, "edges": r.unweighted.num_edges} for r in report},
    }
    if method == "expander":
        held = [e for e in expander_callback.events if not e.committed and not e.paused]
        row["held_at_step"] = held[0].step if held else None
        row["held_reason"] = held[0].reason if held else ""
        corrected = [e for e in expander_callback.events if e.committed and e.kept_share < 1.0]
        row["corrected_steps"] = len(corrected)
        row["min_kept_share"] = min((e.kept_share for e in corrected), default=1.0)
    return row


def dense_checks(rows: list[dict], y_test) -> dict:
    """Per cell, `chance_check` of its dense row on the test labels `y_test` (dense accuracy None before it ran)."""
    return {cell: chance_check(next((r["test_accuracy"] for r in rows if r["cell"] == cell and r["method"] == "dense"),
                                    None), y_test)
            for cell in dict.fromkeys(r["cell"] for r in rows)}


def to_markdown(rows: list[dict], args, hardware: str, checks: dict) -> str:
    """The results table and the comparisons drawn from it; `checks` (`dense_checks`) names the cells whose dense
    model is near chance, whose rows compare nothing and are flagged with the reason."""
    lines = ["# Pruning quality on sequential MNIST (row-wise, 28 x 28)", "",
             f"Command: `python benchmarks/pruning_quality.py --epochs {args.epochs} --units {args.units} "
             f"--sparsities {' '.join(str(s) for s in args.sparsities)} --cells {' '.join(args.cells)} "
             f"--frequency {args.frequency} --seed {args.seed} --out {args.out}`  ",
             f"Hardware: {hardware}. Data: MNIST IDX files, 55,000 train / 5,000 validation (last training images) / "
             f"10,000 test; batch {args.batch_size}, Adam 1e-3, {args.epochs} epochs, seed {args.seed}, pruning "
             f"from step 0 to 67 % of training every {args.frequency} steps. Sparsity is of kernel and recurrent "
             f"kernel together; Delta values are the worst over the per-gate graphs (unweighted; w. = weighted).", "",
             "| cell | method | stop rule | target sparsity | measured sparsity | q (%) | test acc. (%) | "
             "min Delta_R | min Delta_S | min w.Delta_R | isolated nodes | s / epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['method']} | {r['stop_rule'] or '-'} | {r['target_sparsity']:.2f} | "
                     f"{r['measured_sparsity']:.4f} | {100 * (1 - r['measured_sparsity']):.2f} | "
                     f"{100 * r['test_accuracy']:.2f} | {r['worst_delta_r']:.3f} | {r['worst_delta_s']:.3f} | "
                     f"{r['worst_weighted_delta_r']:.3f} | {r['isolated_nodes']} | {r['seconds_per_epoch']:.1f} |")
    unjudged = [f"- {cell}: {check['no_conclusion']}; its methods' accuracies compare nothing."
                for cell, check in checks.items() if check["no_conclusion"]]
    if unjudged:
        lines += [""] + unjudged
    lines += ["", "Training time of expansion-aware pruning relative to tfmot-only pruning (same sparsity):", ""]
    for r in rows:
        if r["method"] == "expander" and r["stop_rule"] == "monitor":
            base = [b for b in rows if b["method"] == "tfmot" and b["cell"] == r["cell"]
                    and b["target_sparsity"] == r["target_sparsity"]]
            if base:
                lines.append(f"- {r['cell']} at {r['target_sparsity']:.2f}: "
                             f"{r['seconds_per_epoch'] / base[0]['seconds_per_epoch']:.3f}x")
    for r in rows:
        if r["stop_rule"] == "hold":
            where = f"held at step {r['held_at_step']}, q = {100 * (1 - r['measured_sparsity']):.2f} % " \
                    f"({r['held_reason']})" if r.get("held_at_step") else "never held"
            lines.append(f"- hold run, {r['cell']}: {where}; test accuracy {100 * r['test_accuracy']:.2f} %")
        if r["stop_rule"] == "correct":
            where = f"held at step {r['held_at_step']}" if r.get("held_at_step") else "never held"
            lines.append(f"- correct run, {r['cell']}: {r['corrected_steps']} pruning steps repaired (smallest share "
                         f"of magnitude edges kept {100 * r['min_kept_share']:.0f} %), {where}, q = "
                         f"{100 * (1 - r['measured_sparsity']):.2f} %; test accuracy {100 * r['test_accuracy']:.2f} %")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--frequency", type=int, default=100)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95])
    parser.add_argument("--cells", nargs="+", default=["lstm", "simple_rnn"], choices=list(CELLS))
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)

    (x_train, y_train), test = datasets.sequential_mnist(args.data_dir)
    validation = (x_train[-VALIDATION_SIZE:], y_train[-VALIDATION_SIZE:])
    train = (x_train[:-VALIDATION_SIZE], y_train[:-VALIDATION_SIZE])
    if args.train_samples:
        train = (train[0][: args.train_samples], train[1][: args.train_samples])
    data = (train, validation, test)
    hardware = f"{os.cpu_count()} CPU cores, TensorFlow CPU, no GPU"
    rows = []
    json_path = os.path.join(args.out, "pruning_quality.json")
    for cell in args.cells:
        plan = [("dense", 0.0, "")]
        plan += [(method, s, "monitor") for s in args.sparsities for method in ("tfmot", "expander")]
        plan += [("expander", max(args.sparsities), rule) for rule in ("hold", "correct")]
        for method, sparsity, stop_rule in plan:
            print(f"== {cell} {method} sparsity {sparsity} {stop_rule}", flush=True)
            rows.append(train_one(method, cell, sparsity, stop_rule, args, data))
            payload = {"arguments": vars(args), "hardware": hardware, "rows": rows,
                       "dense_checks": dense_checks(rows, test[1])}
            write_atomic(json_path, json.dumps(analysis.nan_to_none(payload), indent=2))
    markdown = to_markdown(rows, args, hardware, dense_checks(rows, test[1]))
    write_atomic(os.path.join(args.out, "pruning_quality.md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
