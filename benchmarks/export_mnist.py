"""Benchmark: export of a real sequential-MNIST LSTM(128) or GRU(128), pruned to 90 % and dense, to int8 TFLite for
TFLM.

Trains both with the main job (examples/sequential_mnist.py: same seed, epochs and data; the pruned one with
stop_rule="monitor" so that it reaches 90 %), exports each to float32 and int8 with keras_expander.tflite.export, runs
every test sequence under LiteRT and TFLM, and writes results/export_mnist_<cell>.json with the acceptance checks:
  int8 TFLM accuracy within 0.5 points of the Keras float accuracy;
  gzip bytes of the pruned int8 model <= 0.30 x those of the dense int8 model;
  TFLM arena <= 16 KiB.
The accuracy check is None, with the reason, when the dense model is near chance (it learned nothing to keep).

  python benchmarks/export_mnist.py --epochs 6 --out results
  python benchmarks/export_mnist.py --cell gru --epochs 3 --out results   # GRU: unrolled for int8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.recipes import chance_check, main_job_command, run_main_job  # noqa: E402
from keras_expander import datasets, export  # noqa: E402
from keras_expander.files import write_atomic  # noqa: E402
from keras_expander.pruning.prune import load_model  # noqa: E402


def acceptance_checks(runs: dict, y_test) -> dict:
    """The acceptance checks of the pruned model's export (module docstring).

    Args:
        runs: "pruned" and "dense" -> {"reports": mode -> `ExportReport` as a dict}, as `main` builds them.
        y_test: The test labels the reports' accuracies were measured on.

    Returns:
        The checks, with the dense model's Keras float accuracy and the chance accuracy of `y_test`. When the dense
        model is near chance the int8 accuracy check is None (a model that never learned agrees with itself at any
        precision) and "no_conclusion" gives the reason; the size and arena checks do not depend on accuracy.
    """
    pruned_int8, dense_int8 = runs["pruned"]["reports"]["int8"], runs["dense"]["reports"]["int8"]
    pruned_float = runs["pruned"]["reports"]["float32"]
    check = chance_check(runs["dense"]["reports"]["float32"]["keras_accuracy"], y_test)
    within = abs(pruned_int8["tflm_accuracy"] - pruned_float["keras_accuracy"]) <= 0.005
    return {
        "int8_tflm_accuracy_minus_keras_float_points": 100 * (pruned_int8["tflm_accuracy"]
                                                              - pruned_float["keras_accuracy"]),
        "int8_tflm_within_0.5_points_of_keras_float": None if check["no_conclusion"] else within,
        "dense_keras_float_accuracy": check["dense_accuracy"], "chance_accuracy": check["chance_accuracy"],
        "no_conclusion": check["no_conclusion"],
        "gzip_ratio_pruned_to_dense_int8": pruned_int8["gzip_bytes"] / dense_int8["gzip_bytes"],
        "gzip_ratio_at_most_0.30": pruned_int8["gzip_bytes"] <= 0.30 * dense_int8["gzip_bytes"],
        "int8_arena_bytes": pruned_int8["arena_bytes"],
        "arena_at_most_16_KiB": pruned_int8["arena_bytes"] <= 16 * 1024,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--test-samples", type=int, default=0, help="0 = all 10,000 test sequences")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--work-dir", default="runs/export_mnist")
    parser.add_argument("--out", default="results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x_train, _), (x_test, y_test) = datasets.sequential_mnist(args.data_dir)
    if args.test_samples:
        x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    representative = x_train[:: len(x_train) // 500][:500]
    runs = {}
    for name, sparsity, stop_rule in (("pruned", args.sparsity, "monitor"), ("dense", 0.0, "hold")):
        folder = os.path.join(args.work_dir, args.cell, name)
        train_argv = ["--cell", args.cell, "--units", "128", "--final-sparsity", str(sparsity), "--epochs",
                      str(args.epochs), "--stop-rule", stop_rule, "--prune-begin", "0", "--seed", str(args.seed),
                      "--out", folder,
                      "--verbose", "2"] + (["--data-dir", args.data_dir] if args.data_dir else [])
        summary = run_main_job(train_argv)
        model = load_model(os.path.join(folder, "model.keras"))
        reports = export.export_model(model, modes=("float32", "int8"), x_test=x_test, y_test=y_test,
                                      representative_data=representative, out_dir=os.path.join(folder, "export"))
        print("\n".join(export.format_report(reports)))
        runs[name] = {"train_command": main_job_command(train_argv),
                      "test_accuracy_keras_training_run": summary["test_accuracy"],
                      "layer_sparsity": summary["layers"][0]["sparsity"],
                      "reports": {r.mode: dataclasses.asdict(r) for r in reports}}

    checks = acceptance_checks(runs, y_test)
    payload = {"command": "python benchmarks/export_mnist.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "hardware": f"{os.cpu_count()} CPU cores (TFLM timings are this host, not a microcontroller)",
               "test_sequences": int(len(x_test)), "checks": checks, "runs": runs}
    write_atomic(os.path.join(args.out, f"export_mnist_{args.cell}.json"), json.dumps(payload, indent=2))
    print(json.dumps(checks, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
