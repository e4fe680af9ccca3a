"""Training time of pruning on every Keras: tf_keras (tfmot's wrapper) and Keras 3 on TensorFlow, JAX and PyTorch,
LSTM(128) on sequential MNIST.

For each Keras / backend it trains the same model dense and pruned to `--sparsity` with `prune_expander` +
`ExpanderPruningCallback` (same schedule, data, batch size, optimizer and seed), and times every epoch. Each run is
a fresh process (a Keras 3 process keeps the backend it imported Keras with), with `--threads` threads for the
backend's own thread pools. Runs alternate between the Keras / backends, dense first, so that a drift of the
machine hits them all, and the whole round is repeated `--repeats` times. The first epoch of each run is left out
(it traces or compiles the train step). Reported: per Keras / backend and dense or pruned, the fastest of the
repeats' median seconds per epoch (this VM's speed changes by up to 1.5x between identical runs; the fastest is
the least disturbed), each one's pruned / dense ratio (the cost of pruning itself; target <= 1.05) and the Keras 3
(TensorFlow) / tf_keras ratio of the pruned runs (target <= 1.10).

Writes <out>/keras3_overhead.json and .md.

  python benchmarks/keras3_overhead.py --threads 1 --epochs 3 --repeats 2 --data-dir ../shared/data
  python benchmarks/keras3_overhead.py --kinds jax torch --threads 1     # only these
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# tf_keras, or Keras 3 on a backend.
KINDS = ("tf_keras", "tensorflow", "jax", "torch")
PRUNING_TARGET = 1.05  # pruned / dense on the same Keras and backend (issue 38)
KERAS3_TARGET = 1.10  # Keras 3 / tf_keras on TensorFlow, pruned


def limit_threads(kind: str, threads: int | None) -> None:
    """Caps the backend's intra- and inter-op threads (before its first op); XLA's are set by the parent."""
    if not threads:
        return
    if kind in ("tf_keras", "tensorflow"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif kind == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)


def train_and_time(kind: str, pruned: bool, args) -> dict:
    """Trains one model in this process and returns its seconds per epoch (and the sparsity reached)."""
    import keras_expander as ke
    from benchmarks.recipes import build_model
    from keras_expander import datasets
    from keras_expander import frameworks
    from keras_expander.pruning import wrapper as wrapper_lib
    from keras_expander.pruning.callback import DualKerasCallback

    class EpochTimer(DualKerasCallback):
        """Wall-clock seconds of every epoch, for either Keras' fit."""

        def __init__(self):
            super().__init__()
            self.seconds, self._start = [], 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    limit_threads(kind, args.threads)
    (x_train, y_train), _ = datasets.sequential_mnist(args.data_dir)
    if args.train_samples:
        x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    keras_version = "tf_keras" if kind == "tf_keras" else "keras3"
    k = frameworks.tf_keras if kind == "tf_keras" else frameworks.keras
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
    sparsity = None
    if pruned:
        sparsity = min(wrapper_lib.mask_sparsity(layer) for layer in wrapper_lib.pruning_wrappers(model))
        if abs(sparsity - args.sparsity) > 0.005:
            raise RuntimeError(f"{kind}: the pruned run reached sparsity {sparsity:.4f}, not {args.sparsity}")
    return {"seconds": timer.seconds, "sparsity": sparsity, "train_samples": int(len(x_train))}


def run_worker(kind: str, pruned: bool, argv: list[str], threads: int | None) -> dict:
    """Runs `train_and_time` in a fresh process for `kind` (this command's `argv`); returns its result."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    environment["KERAS_BACKEND"] = "tensorflow" if kind == "tf_keras" else kind
    if kind == "jax" and threads:  # XLA's CPU thread pool is configured through its flags
        environment["XLA_FLAGS"] = (environment.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                    f"intra_op_parallelism_threads={threads}").strip()
    command = [sys.executable, os.path.abspath(__file__), *argv, "--worker", kind] + (["--pruned"] if pruned else [])
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        raise SystemExit(f"keras3_overhead: the {kind} {'pruned' if pruned else 'dense'} run failed:\n"
                         + "\n".join(completed.stderr.strip().splitlines()[-15:]))
    return json.loads(completed.stdout.strip().splitlines()[-1])


def to_markdown(result: dict) -> str:
    a = result["settings"]
    lines = ["# Training time of pruning: tf_keras and Keras 3 on TensorFlow, JAX and PyTorch", "",
             f"{result['date']}, `{result['command']}`. LSTM({a['units']}) on sequential MNIST "
             f"({a['train_samples']:,} training images), batch {a['batch_size']}, pruned to {a['sparsity']:g} "
             f"(monitor rule, every {a['frequency']} steps over the first 67 % of training), {a['epochs']} epochs "
             f"per run, each run a fresh process, {a['threads'] or 'default'} thread(s) per backend, "
             f"{result['hardware']}; {a['versions']}. The fastest of {a['repeats']} runs' median seconds per epoch "
             f"over epochs 2..{a['epochs']} (epoch 1 traces or compiles the train step).", "",
             "| Keras (backend) | dense s/epoch | pruned s/epoch | pruned / dense |", "|---|---|---|---|"]
    for kind, row in result["median_seconds"].items():
        name = "tf_keras (TensorFlow)" if kind == "tf_keras" else f"Keras 3 ({kind})"
        ratio = row["pruned"] / row["dense"]
        lines.append(f"| {name} | {row['dense']:.2f} | {row['pruned']:.2f} | **{ratio:.3f}** "
                     f"({'within' if ratio <= PRUNING_TARGET else 'over'} the {PRUNING_TARGET:g} target) |")
    if result.get("ratio_keras3_tf_keras_pruned") is not None:
        lines += ["", f"- Keras 3 (TensorFlow) / tf_keras, pruned: **{result['ratio_keras3_tf_keras_pruned']:.3f}** "
                      f"(target <= {KERAS3_TARGET:g}); dense: {result['ratio_keras3_tf_keras_dense']:.3f} (the LSTM "
                      f"layers themselves)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="tf_keras and/or Keras 3 backends (default: all four)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, >= 2 (default 3)")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--frequency", type=int, default=100)
    parser.add_argument("--train-samples", type=int, default=None, help="first N training images (smoke runs)")
    parser.add_argument("--threads", type=int, default=None, help="threads of each backend's thread pools")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of runs (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)  # one run, in this process
    parser.add_argument("--pruned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (the first epoch is left out). Received: {args.epochs}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1. Received: {args.repeats}")
    if args.worker:
        print(json.dumps(train_and_time(args.worker, args.pruned, args)))
        return 0
    import platform
    from importlib import metadata

    from benchmarks.recipes import write_report

    runs = {kind: {"dense": [], "pruned": []} for kind in args.kinds}
    for _ in range(args.repeats):
        for pruned in (False, True):
            for kind in args.kinds:
                run = run_worker(kind, pruned, argv, args.threads)
                runs[kind]["pruned" if pruned else "dense"].append(run)
                print(f"{kind} {'pruned' if pruned else 'dense'}: " + ", ".join(f"{s:.2f}" for s in run["seconds"])
                      + " s/epoch", flush=True)
    medians = {kind: {name: min(statistics.median(run["seconds"][1:]) for run in repeats)
                      for name, repeats in by_kind.items()} for kind, by_kind in runs.items()}
    packages = ("tensorflow", "tf-keras", "keras", "jax", "torch")
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in packages
                         if name in ("tensorflow", "tf-keras", "keras") or name.replace("-", "_") in args.kinds)
    both = {"tf_keras", "tensorflow"} <= set(args.kinds)
    result = {
        "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/keras3_overhead.py " + " ".join(argv),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "settings": {"units": args.units, "sparsity": args.sparsity, "batch_size": args.batch_size,
                     "frequency": args.frequency, "epochs": args.epochs, "threads": args.threads,
                     "repeats": args.repeats, "versions": versions,
                     "train_samples": next(iter(runs.values()))["dense"][0]["train_samples"]},
        "runs": runs, "median_seconds": medians,
        "pruned_over_dense": {kind: row["pruned"] / row["dense"] for kind, row in medians.items()},
        "ratio_keras3_tf_keras_pruned": medians["tensorflow"]["pruned"] / medians["tf_keras"]["pruned"] if both
        else None,
        "ratio_keras3_tf_keras_dense": medians["tensorflow"]["dense"] / medians["tf_keras"]["dense"] if both
        else None,
    }
    write_report(args.out, "keras3_overhead", result, to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
