"""Training time of the Keras 3 pruning path against the tf_keras (tfmot) path, LSTM(128) on sequential MNIST.

For each Keras (tf_keras, Keras 3) it trains the same model dense and pruned to `--sparsity` with
`prune_expander` + `ExpanderPruningCallback` (same schedule, data, batch size, optimizer and seed), and times every
epoch. Runs alternate between the two Kerases, so that a drift of the machine hits both. The first epoch of each
run is left out of the medians (it traces the train step). Reported: median seconds per epoch, the Keras 3 /
tf_keras ratio of the pruned runs (the issue's target is <= 1.10) and of the dense runs (what Keras 3's own LSTM
costs, which pruning cannot change), and each Keras' pruned / dense ratio (the cost of pruning itself).

Writes <out>/keras3_overhead.json and .md.

  python benchmarks/keras3_overhead.py --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402

from benchmarks.recipes import write_report  # noqa: E402
from keras_expander.pruning.callback import DualKerasCallback  # noqa: E402

KERAS_VERSIONS = ("tf_keras", "keras3")


class EpochTimer(DualKerasCallback):
    """Wall-clock seconds of every epoch, for either Keras' fit."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def train_and_time(keras_version: str, pruned: bool, args, x_train, y_train) -> list[float]:
    """Trains one model and returns its seconds per epoch."""
    import keras_expander as ke
    from benchmarks.recipes import build_model
    from keras_expander import frameworks as backend
    from keras_expander.pruning import wrapper as wrapper_lib

    k = backend.keras if keras_version == "keras3" else backend.tf_keras
    k.utils.set_random_seed(args.seed)
    model = build_model("lstm", args.units, keras_version=keras_version)
    callbacks = []
    if pruned:
        steps = math.ceil(len(x_train) / args.batch_size) * args.epochs
        end_step = args.frequency * max(1, int(0.67 * steps) // args.frequency)
        schedule = ke.ExpanderPruningSchedule(final_sparsity=args.sparsity, begin_step=0, end_step=end_step,
                                              frequency=args.frequency, stop_rule="monitor")
        model = ke.prune_expander(model, schedule)
        callbacks.append(ke.ExpanderPruningCallback())
    timer = EpochTimer()
    model.compile(optimizer=k.optimizers.Adam(1e-3), loss=k.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, callbacks=callbacks + [timer],
              verbose=0)
    if pruned:
        sparsity = min(wrapper_lib.mask_sparsity(layer) for layer in wrapper_lib.pruning_wrappers(model))
        if abs(sparsity - args.sparsity) > 0.005:
            raise RuntimeError(f"{keras_version}: the pruned run reached sparsity {sparsity:.4f}, not {args.sparsity}")
    return timer.seconds


def to_markdown(result: dict) -> str:
    a = result["settings"]
    lines = ["# Training time: Keras 3 pruning path vs tf_keras (tfmot) path", "",
             f"{result['date']}, `{result['command']}`. LSTM({a['units']}) on sequential MNIST "
             f"({a['train_samples']:,} training images), batch {a['batch_size']}, {a['epochs']} epochs per run, "
             f"{a['threads'] or 'default'} TensorFlow thread(s), {result['hardware']}. Median seconds per epoch over "
             f"epochs 2..{a['epochs']} of each run (epoch 1 traces the train step).", "",
             "| Keras | dense s/epoch | pruned s/epoch | pruned / dense |", "|---|---|---|---|"]
    for version in KERAS_VERSIONS:
        row = result["median_seconds"][version]
        lines.append(f"| {version} | {row['dense']:.2f} | {row['pruned']:.2f} | {row['pruned'] / row['dense']:.3f} |")
    lines += ["", f"- Keras 3 / tf_keras, pruned: **{result['ratio_pruned']:.3f}** (target <= 1.10).",
              f"- Keras 3 / tf_keras, dense: {result['ratio_dense']:.3f} (the LSTM layers themselves).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, >= 2 (default 3)")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--frequency", type=int, default=100)
    parser.add_argument("--train-samples", type=int, default=None, help="first N training images (smoke runs)")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra- and inter-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (the first epoch is left out). Received: {args.epochs}")
    import platform

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from keras_expander import datasets

    (x_train, y_train), _ = datasets.sequential_mnist(args.data_dir)
    if args.train_samples:
        x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    seconds = {version: {} for version in KERAS_VERSIONS}
    for pruned in (False, True):
        for version in KERAS_VERSIONS:
            seconds[version]["pruned" if pruned else "dense"] = train_and_time(version, pruned, args, x_train, y_train)
            print(f"{version} {'pruned' if pruned else 'dense'}: "
                  + ", ".join(f"{s:.2f}" for s in seconds[version]["pruned" if pruned else "dense"]) + " s/epoch",
                  flush=True)
    medians = {version: {kind: statistics.median(values[1:]) for kind, values in runs.items()}
               for version, runs in seconds.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/keras3_overhead.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "settings": {"units": args.units, "sparsity": args.sparsity, "batch_size": args.batch_size,
                     "epochs": args.epochs, "threads": args.threads, "train_samples": int(len(x_train)),
                     "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}},
        "seconds_per_epoch": seconds, "median_seconds": medians,
        "ratio_pruned": medians["keras3"]["pruned"] / medians["tf_keras"]["pruned"],
        "ratio_dense": medians["keras3"]["dense"] / medians["tf_keras"]["dense"],
    }
    write_report(args.out, "keras3_overhead", result, to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
