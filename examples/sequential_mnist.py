"""Main job: prune an LSTM/SimpleRNN on real row-wise sequential MNIST with expansion-aware pruning.

Trains (28 steps x 28 features, pixels / 255) with `ExpanderPruningSchedule` + `ExpanderPruningCallback`, reports
test accuracy, per-graph Delta and sparsity, and writes into --out:
  model.keras    the stripped (unwrapped, masks baked in) tf_keras model
  history.csv    per-epoch loss/accuracy, sparsity/<layer>, stopped/<layer>, min_<criterion>/<layer> (worst graph)
  summary.json   arguments, test accuracy, final per-graph metrics, every pruning event, wall times
  training.png   validation accuracy and the worst Delta over training steps

Example (the README's main command runs this with its defaults):
  python examples/sequential_mnist.py --cell lstm --units 128 --final-sparsity 0.9 --epochs 3 --out runs/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # for benchmarks.recipes

from keras_expander.frameworks import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything loads TensorFlow: no start-up log lines in the job's output

import numpy as np  # noqa: E402

import keras_expander as ke  # noqa: E402
from benchmarks.recipes import CELLS, HOLDOUT_SIZE, VALIDATION_SIZE, build_model, measure_trained_model  # noqa: E402
from keras_expander import datasets  # noqa: E402
from keras_expander.expansion import analysis  # noqa: E402
from keras_expander.expansion.graphs import GATE_VIEWS  # noqa: E402
from keras_expander.files import atomic_path, write_atomic  # noqa: E402
from keras_expander.pruning.masks import MASK_POLICIES  # noqa: E402
from keras_expander.pruning.schedule import CRITERIA, STOP_RULES, TOLERANCE_REFERENCES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=CELLS, default="lstm")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--final-sparsity", type=float, default=0.9,
                        help="target fraction of zeros of kernel and recurrent kernel (default 0.9)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--policy", choices=MASK_POLICIES, default="degree_floor_magnitude")
    parser.add_argument("--criterion", choices=CRITERIA, default="delta_r")
    parser.add_argument("--representation", choices=("unweighted", "weighted"), default="unweighted")
    parser.add_argument("--stop-rule", choices=STOP_RULES, default="tolerance",
                        help="default tolerance: pause while held-out accuracy is --tolerance points down")
    parser.add_argument("--margin", type=float, default=0.0)
    parser.add_argument("--gate-view", choices=GATE_VIEWS, default="union",
                        help="graphs of gated cells that the stop rule measures (default union)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="stop_rule=tolerance: allowed drop of held-out accuracy, points (default 1.0)")
    parser.add_argument("--tolerance-window", type=int, default=3,
                        help="stop_rule=tolerance: pruning steps whose held-out accuracies are averaged (default 3)")
    parser.add_argument("--tolerance-reference", choices=TOLERANCE_REFERENCES, default="best",
                        help="stop_rule=tolerance: drops measured against the best of the fit, or that best credited "
                             "with the unpruned model's projected learning trend (default best)")
    parser.add_argument("--frequency", type=int, default=50, help="prune every N steps (default 50)")
    parser.add_argument("--prune-begin", type=float, default=0.33,
                        help="fraction of training before the first pruning step (default 0.33: the held-out "
                             "accuracy that stop_rule=tolerance compares with is a trained model's)")
    parser.add_argument("--prune-end", type=float, default=0.67,
                        help="fraction of training after which the final sparsity is reached (default 0.67)")
    parser.add_argument("--train-samples", type=int, default=None,
                        help="use only the first N training images (default: all 55,000 after validation)")
    parser.add_argument("--data-dir", default=None, help=f"folder with mnist/ (default ${datasets.DATA_ENV})")
    parser.add_argument("--out", default="runs/sequential_mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras fit verbosity")
    args = parser.parse_args(argv)
    if not 0.0 <= args.final_sparsity < 1.0:
        parser.error(f"--final-sparsity must be in [0, 1). Received: {args.final_sparsity}")
    if not 0.0 < args.prune_end <= 1.0:
        parser.error(f"--prune-end must be in (0, 1]. Received: {args.prune_end}")
    if not 0.0 <= args.prune_begin < args.prune_end:
        parser.error(f"--prune-begin must be in [0, --prune-end={args.prune_end}). Received: {args.prune_begin}")
    for name in ("units", "epochs", "batch_size", "frequency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {getattr(args, name)}")
    return args


def _finite(value):
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def plot_training(history: dict, events: list, steps_per_epoch: int, path: str, title: str) -> None:
    """Validation accuracy (left axis) and the worst Delta over training steps (right axis), to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, accuracy_axis = plt.subplots(figsize=(8, 4.5))
    epochs = np.arange(1, len(history["val_accuracy"]) + 1)
    accuracy_axis.plot(epochs * steps_per_epoch, 100 * np.asarray(history["val_accuracy"]), "o-", color="tab:blue",
                       label="validation accuracy")
    accuracy_axis.set_xlabel("training step")
    accuracy_axis.set_ylabel("validation accuracy (%)", color="tab:blue")
    delta_axis = accuracy_axis.twinx()
    for layer in sorted({event.layer for event in events}):
        points = [(e.step, e.worst_value, 100 * (1 - e.sparsity)) for e in events if e.layer == layer and e.committed]
        if points:
            steps, worst, remaining = zip(*points)
            delta_axis.plot(steps, worst, ".-", color="tab:red", label=f"{layer}: worst Delta (committed steps)")
        held = [e for e in events if e.layer == layer and not e.committed and not e.paused]
        if held:
            delta_axis.axvline(held[0].step, color="tab:red", linestyle="--",
                               label=f"{layer}: held at q = {100 * (1 - held[0].sparsity):.1f} %")
    delta_axis.axhline(0.0, color="grey", linewidth=0.8)
    delta_axis.set_ylabel("worst Delta over graphs (dimensionless)", color="tab:red")
    lines = accuracy_axis.get_legend_handles_labels()
    more = delta_axis.get_legend_handles_labels()
    accuracy_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)
    accuracy_axis.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png", dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    """Trains, prunes, evaluates and writes the outputs; returns the summary dict."""
    from keras_expander.frameworks import tf_keras

    (x_train, y_train), (x_test, y_test) = datasets.sequential_mnist(args.data_dir)
    x_val, y_val = x_train[-VALIDATION_SIZE:], y_train[-VALIDATION_SIZE:]
    x_train, y_train = x_train[:-VALIDATION_SIZE], y_train[:-VALIDATION_SIZE]
    if args.train_samples:
        x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    tf_keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    begin_step = int(args.prune_begin * steps_per_epoch * args.epochs)
    pruning_steps = max(1, int(args.prune_end * steps_per_epoch * args.epochs) - begin_step)
    # tfmot prunes when (step - begin_step) % frequency == 0, so end_step - begin_step must be a multiple of the
    # frequency; short runs get at least 10 pruning events.
    frequency = min(args.frequency, max(1, pruning_steps // 10))
    end_step = begin_step + frequency * max(1, pruning_steps // frequency)
    schedule = ke.ExpanderPruningSchedule(
        final_sparsity=args.final_sparsity, begin_step=begin_step, end_step=end_step, frequency=frequency,
        criterion=args.criterion, representation=args.representation, margin=args.margin,
        gate_view=args.gate_view, stop_rule=args.stop_rule, tolerance=args.tolerance,
        tolerance_window=args.tolerance_window, tolerance_reference=args.tolerance_reference)
    model = ke.prune_expander(build_model(args.cell, args.units), schedule, mask_policy=args.policy,
                              seed=args.seed)
    model.compile(optimizer=tf_keras.optimizers.Adam(args.learning_rate),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    pruning = ke.ExpanderPruningCallback(verbose=1, holdout=(x_val[:HOLDOUT_SIZE], y_val[:HOLDOUT_SIZE]))
    history_path = os.path.join(args.out, "history.csv")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_val, y_val), verbose=args.verbose,
                        callbacks=[pruning, tf_keras.callbacks.CSVLogger(history_path)])
    train_seconds = time.perf_counter() - start

    stripped = ke.strip_pruning(model)
    model_path = os.path.join(args.out, "model.keras")
    with atomic_path(model_path) as temporary:
        stripped.save(temporary)  # saved before compiling: the file carries no optimizer state
    test_accuracy, report, layer_summary = measure_trained_model(stripped, x_test, y_test)

    held = [event for event in pruning.events if not event.committed and not event.paused]
    summary = {
        "arguments": vars(args),
        "data": "MNIST (IDX files), row-wise 28 x 28; train 55,000 (or --train-samples), validation = last 5,000 "
                "training images, test 10,000",
        "test_accuracy": float(test_accuracy),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / args.epochs,
        "layers": [{key: _finite(value) for key, value in dataclasses.asdict(s).items()} for s in layer_summary],
        "held": [{key: _finite(value) for key, value in dataclasses.asdict(event).items()} for event in held],
        "graphs": json.loads(analysis.report_to_json(report))["graphs"],
        "events": [{key: _finite(value) for key, value in dataclasses.asdict(e).items()} for e in pruning.events],
        "outputs": {"model": model_path, "history": history_path,
                    "summary": os.path.join(args.out, "summary.json"),
                    "plot": os.path.join(args.out, "training.png")},
    }
    plot_training(history.history, pruning.events, steps_per_epoch, summary["outputs"]["plot"],
                  f"Sequential MNIST {args.cell}({args.units}), {args.policy}, {args.criterion} {args.stop_rule}")
    write_atomic(summary["outputs"]["summary"], json.dumps(summary, indent=2))

    ke.print_report(report)
    for s in layer_summary:
        print(f"{s.layer}: sparsity {100 * s.sparsity:.2f} % (q = {100 * (1 - s.sparsity):.2f} %), "
              f"min Delta_R {s.worst_delta_r:.3f}, min Delta_S {s.worst_delta_s:.3f}")
    for event in held:
        print(f"{event.layer} held at step {event.step}: q = {100 * (1 - event.sparsity):.2f} % ({event.reason})")
    print(f"test accuracy: {100 * test_accuracy:.2f} %  ({train_seconds:.0f} s training, "
          f"{train_seconds / args.epochs:.1f} s per epoch)")
    for name, path in summary["outputs"].items():
        print(f"wrote {name}: {path}")
    return summary


def main(argv=None) -> int:
    try:
        run(parse_args(argv))
    except datasets.DataNotFoundError as error:
        print(f"sequential_mnist: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
