"""Command line.

  keras-expander analyze MODEL_PATH [--json PATH]        spectral report of every SimpleRNN/LSTM layer
  keras-expander export MODEL_PATH [--mode float32 int8]  TFLite export verified under LiteRT and TFLite Micro
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_expander import analysis
from keras_expander.datasets import DATASETS
from keras_expander.graph import GATE_VIEWS
from keras_expander.io_utils import write_atomic


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `keras-expander` command."""
    parser = argparse.ArgumentParser(prog="keras-expander", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="spectral expansion report of every SimpleRNN/LSTM layer")
    analyze.add_argument("model_path", help="a .keras file or SavedModel folder")
    analyze.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    analyze.add_argument("--gate-view", choices=GATE_VIEWS, action="append",
                         help="LSTM gate views to report (repeatable; default: all)")
    export = commands.add_parser("export", help="convert to TFLite, verify under LiteRT and TFLM, report size/RAM")
    export.add_argument("model_path", help="a pruned or stripped .keras file or SavedModel folder")
    export.add_argument("--mode", nargs="+", default=["float32", "int8"], choices=("float32", "int8",
                                                                                 "dynamic_range"))
    export.add_argument("--target", choices=("tflm", "litert"), default="tflm",
                        help="tflm (default) refuses what TFLite Micro cannot run")
    export.add_argument("--sparsity-encoding", action="store_true",
                        help="tf.lite.Optimize.EXPERIMENTAL_SPARSITY (needs --target litert)")
    export.add_argument("--dataset", choices=DATASETS, default="sequential_mnist",
                        help="the model's data set: test split verifies, training split calibrates int8")
    export.add_argument("--snr-db", type=float, default=None,
                        help="speech_commands: background noise SNR in dB of the verification data")
    export.add_argument("--data-dir", default=None, help="offline data folder (default $KERAS_EXPANDER_DATA)")
    export.add_argument("--test-samples", type=int, default=2000,
                        help="test sequences to verify (0 = the whole test split; default 2000)")
    export.add_argument("--representative-samples", type=int, default=500,
                        help="training sequences for int8 calibration (default 500)")
    export.add_argument("--flash-kib", type=float, default=1024.0, help="target flash in KiB (default 1024)")
    export.add_argument("--ram-kib", type=float, default=256.0, help="target RAM in KiB (default 256)")
    export.add_argument("--out", default="export_out", help="output folder")
    return parser


def run_export(args) -> int:
    """`keras-expander export`: loads the model and data, exports every mode, prints the table."""
    from keras_expander import datasets, export
    from keras_expander.prune import load_model

    try:
        export.check_sparsity_encoding(args.sparsity_encoding, args.target)
        for mode in args.mode:
            export.check_mode(mode, args.target)
        model = load_model(args.model_path)
        (x_train, _), (x_test, y_test) = datasets.load_train_test(args.dataset, args.data_dir, snr_db=args.snr_db)
        if tuple(model.input_shape[1:]) != x_test.shape[1:]:
            raise ValueError(f"Model {args.model_path!r} takes inputs of shape {tuple(model.input_shape[1:])}, but "
                             f"--dataset {args.dataset} gives sequences of shape {x_test.shape[1:]}.")
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"keras-expander export: {error}", file=sys.stderr)
        return 2
    if args.test_samples:
        x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    # Calibration samples spread over the training split, not only its first images.
    representative = x_train[:: max(1, len(x_train) // args.representative_samples)][: args.representative_samples]
    try:
        reports = export.export_model(model, modes=tuple(args.mode), x_test=x_test, y_test=y_test,
                                      representative_data=representative, out_dir=args.out, target=args.target,
                                      sparsity_encoding=args.sparsity_encoding, flash_kib=args.flash_kib,
                                      ram_kib=args.ram_kib)
    except export.ExportError as error:
        print(f"keras-expander export: {error}", file=sys.stderr)
        return 1
    for line in export.format_report(reports):
        print(line)
    for name in sorted(os.listdir(args.out)):
        print(f"wrote {os.path.join(args.out, name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the process exit code (0 on success, 2 on a bad model or argument)."""
    args = build_parser().parse_args(argv)
    if args.command == "export":
        return run_export(args)
    from keras_expander.prune import load_model  # TensorFlow is loaded only once the arguments are valid

    try:
        model = load_model(args.model_path)
        report = analysis.analyze(model, gate_views=tuple(args.gate_view or GATE_VIEWS))
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"keras-expander analyze: {error}", file=sys.stderr)
        return 2
    analysis.print_report(report)
    if args.json:
        write_atomic(args.json, analysis.report_to_json(report))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
