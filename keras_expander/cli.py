"""keras-expander: expansion-aware pruning of recurrent layers, TFLite export, and firmware for microcontrollers.

  keras-expander analyze MODEL_PATH [--json PATH]        spectral report of every SimpleRNN/LSTM/GRU layer
  keras-expander export MODEL_PATH [--mode float32 int8]  TFLite export verified under LiteRT and TFLite Micro
  keras-expander firmware MODEL.tflite [--target ...]     build into firmware, run on the host / Cortex-M (QEMU),
                                                          verify against TFLite Micro, measure flash/RAM/instructions
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from keras_expander.datasets import AUDIO_SPLIT_RULES, DATASETS
from keras_expander.expansion import analysis
from keras_expander.expansion.graphs import GATE_VIEWS
from keras_expander.files import check_output_file, check_output_folder, staged_folder, write_atomic
from keras_expander.frameworks import import_tensorflow_quietly


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def count_or_all(text: str) -> int:
    """argparse type: an integer >= 0 (0 means all)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (0 = all), got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `keras-expander` command."""
    from keras_expander import __version__

    parser = argparse.ArgumentParser(prog="keras-expander", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"keras-expander {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="spectral expansion report of every SimpleRNN/LSTM/GRU layer",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    analyze.add_argument("model_path", help="a .keras file or SavedModel folder")
    analyze.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    analyze.add_argument("--gate-view", choices=GATE_VIEWS, action="append",
                         help="LSTM gate views to report (repeatable; default: all)")
    export = commands.add_parser("export", help="convert to TFLite, verify under LiteRT and TFLM, report size/RAM",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    export.add_argument("model_path", help="a pruned or stripped .keras file or SavedModel folder")
    export.add_argument("--mode", nargs="+", default=["float32", "int8"], choices=("float32", "int8",
                                                                                 "dynamic_range"),
                        help="conversions: float32, int8 (full integer, for TFLM), dynamic_range (LiteRT only)")
    export.add_argument("--target", choices=("tflm", "litert"), default="tflm",
                        help="tflm (default) refuses what TFLite Micro cannot run")
    export.add_argument("--sparsity-encoding", action="store_true",
                        help="tf.lite.Optimize.EXPERIMENTAL_SPARSITY (needs --target litert)")
    export.add_argument("--dataset", choices=DATASETS, default="sequential_mnist",
                        help="the model's data set: test split verifies, training split calibrates int8 "
                             "(audio_folder: --data-dir is the <label>/*.wav folder)")
    export.add_argument("--data", metavar="FILE.npz", default=None,
                        help="your own arrays instead of --dataset: x_train (int8 calibration), x_test and y_test "
                             "(verification), e.g. numpy.savez(FILE, x_train=..., x_test=..., y_test=...)")
    export.add_argument("--snr-db", type=finite_float, default=None,
                        help="speech_commands: background noise SNR in dB of the verification data")
    export.add_argument("--data-dir", default=None, help="offline data folder (default $KERAS_EXPANDER_DATA)")
    add_audio_split_arguments(export)
    export.add_argument("--test-samples", type=count_or_all, default=2000,
                        help="test sequences to verify (0 = the whole test split)")
    export.add_argument("--representative-samples", type=positive_int, default=500,
                        help="training sequences for int8 calibration")
    export.add_argument("--min-agreement", type=fraction, default=0.95,
                        help="int8 / dynamic_range: the export fails unless Keras, LiteRT and TFLM predict the same "
                             "class on at least this fraction of the test sequences (float32: outputs within 1e-3 "
                             "of Keras, relative to the largest output)")
    export.add_argument("--flash-kib", type=positive_float, default=1024.0,
                        help="target flash in KiB for the model-only fits verdict (flatbuffer alone)")
    export.add_argument("--ram-kib", type=positive_float, default=256.0,
                        help="target RAM in KiB for the model-only fits verdict (arena alone)")
    export.add_argument("--out", default="export_out",
                        help="output folder, replaced as a whole only when the export succeeds")
    add_firmware_parser(commands)
    return parser


def add_audio_split_arguments(parser) -> None:
    """--split-by and --speaker-pattern: `keras_expander.datasets.audio_folder`'s split arguments."""
    parser.add_argument("--split-by", choices=AUDIO_SPLIT_RULES, default=None,
                        help="audio_folder: lists (the folder's validation_list.txt / testing_list.txt), speaker or "
                             "file hash (default: lists when the folder has them, else speaker)")
    parser.add_argument("--speaker-pattern", metavar="REGEX", default=None,
                        help="audio_folder: regular expression whose first group is the speaker in a file name, "
                             "e.g. '^[^_]+_([^_]+)_' for <label>_<speaker>_<n>.wav (default: the name before "
                             "_nohash_ or its first _)")


def add_firmware_parser(commands) -> None:
    """The `keras-expander firmware` subcommand's arguments."""
    from keras_expander.firmware.deploy import BOARDS, DEFAULT_BOARDS
    from keras_expander.firmware.rewrites import ENCODINGS
    from keras_expander.firmware.toolchain import KERNEL_SETS, TARGETS

    firmware = commands.add_parser(
        "firmware", help="build an exported .tflite into firmware, run it on the host and on Cortex-M under QEMU, "
                         "verify against the TFLite Micro interpreter, measure flash, RAM and instructions, and "
                         "estimate cycles and milliseconds",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    firmware.add_argument("tflite_path", help="an exported .tflite (e.g. int8.tflite from `keras-expander export`)")
    firmware.add_argument("--target", nargs="+", choices=TARGETS, default=["host", "cortex-m4"],
                          help="where to build and run: the host, or a Cortex-M core under QEMU")
    firmware.add_argument("--kernels", nargs="+", choices=KERNEL_SETS, default=["reference", "cmsis_nn"],
                          help="TFLM kernel sets for Cortex-M (the host uses reference)")
    firmware.add_argument("--compression", choices=ENCODINGS, default="plain",
                          help="plain: the weights as exported; tflm_prune: TFLM DECODE pruning encoding (bitmask + "
                               "non-zero values; smaller flash, larger arena); ke_fused: each unrolled SimpleRNN or "
                               "GRU layer runs as one fused int8 op of keras_expander's kernels; ke_sparse: the same "
                               "with sparse weights, and pruned LSTM and FULLY_CONNECTED ops on the sparse kernels "
                               "(weights read in place from flash, work only for non-zero weights)")
    firmware.add_argument("--dataset", choices=DATASETS, default="sequential_mnist",
                          help="the model's data set; its test split gives the test sequences")
    firmware.add_argument("--data", metavar="FILE.npz", default=None,
                          help="your own test arrays instead of --dataset: x_test and y_test (as for export --data)")
    firmware.add_argument("--snr-db", type=finite_float, default=None,
                          help="speech_commands: background noise SNR in dB")
    firmware.add_argument("--data-dir", default=None, help="offline data folder (default $KERAS_EXPANDER_DATA)")
    add_audio_split_arguments(firmware)
    firmware.add_argument("--test-samples", type=count_or_all, default=1000,
                          help="test sequences run on every build (0 = the whole test split)")
    firmware.add_argument("--board", choices=sorted(BOARDS), default=None,
                          help="board profile of the --target core: flash and RAM for the fits verdict, clock and "
                               "flash wait states for the cycle estimate's milliseconds (Cortex-M4); default per core: "
                               + ", ".join(f"{target} {board}" for target, board in DEFAULT_BOARDS.items()
                                           if target != "host"))
    firmware.add_argument("--flash-kib", type=positive_float, default=None, help="override the board's flash, KiB")
    firmware.add_argument("--ram-kib", type=positive_float, default=None, help="override the board's RAM, KiB")
    firmware.add_argument("--tflm-tree", default=None,
                          help="TFLM source tree (create_tflm_tree.py output) for a single target and kernel set; "
                               "default: $KERAS_EXPANDER_TFLM/{host,cortex_m4,cortex_m4_cmsis_nn}")
    firmware.add_argument("--out", default="firmware_out",
                          help="output folder (one project per build, report.json), replaced as a whole only when "
                               "every build succeeds")
    firmware.add_argument("--library", metavar="DIR", default=None,
                          help="instead of building and running, write a self-contained source library of the "
                               "(compressed) model for one --target and one --kernels into DIR (new or empty): "
                               "TFLM sources, C API ke_model.h, CMakeLists.txt, Arduino and PlatformIO manifests")


def run_export(args) -> int:
    """`keras-expander export`: loads the model and data, exports every mode, prints the table."""
    from keras_expander import datasets
    from keras_expander.pruning.prune import load_model
    from keras_expander.tflite import export

    try:
        export.check_sparsity_encoding(args.sparsity_encoding, args.target)
        for mode in args.mode:
            export.check_mode(mode, args.target)
        check_output_folder(args.out, "--out")
        model = load_model(args.model_path)
        if args.data:
            arrays = datasets.load_npz(args.data, model.input_shape[1:])
            x_train, x_test, y_test = arrays["x_train"], arrays["x_test"], arrays["y_test"]
        else:
            (x_train, _), (x_test, y_test) = datasets.load_train_test(
                args.dataset, args.data_dir, snr_db=args.snr_db, split_by=args.split_by,
                speaker_pattern=args.speaker_pattern)
        if tuple(model.input_shape[1:]) != x_test.shape[1:]:
            raise ValueError(f"Model {args.model_path!r} takes inputs of shape {tuple(model.input_shape[1:])}, but "
                             f"--dataset {args.dataset} gives sequences of shape {x_test.shape[1:]}.")
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"keras-expander export: {error}", file=sys.stderr)
        return 2
    available = len(x_test)
    if args.test_samples:
        x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    # Calibration samples spread over the training split, not only its first images.
    representative = x_train[:: max(1, len(x_train) // args.representative_samples)][: args.representative_samples]
    try:
        reports = export.export_model(model, modes=tuple(args.mode), x_test=x_test, y_test=y_test,
                                      representative_data=representative, out_dir=args.out, target=args.target,
                                      sparsity_encoding=args.sparsity_encoding, flash_kib=args.flash_kib,
                                      ram_kib=args.ram_kib, print_fn=lambda line: print(line, flush=True),
                                      min_agreement=args.min_agreement)
    except (export.ExportError, ValueError) as error:  # a failed step (1), or a model the export refuses (2)
        print(f"keras-expander export: {error}", file=sys.stderr)
        return 1 if isinstance(error, export.ExportError) else 2
    for line in export.format_report(reports, available_samples=available):
        print(line)
    if len(x_test) < available:
        print("(--test-samples 0 verifies the whole test split)")
    for name in sorted(os.listdir(args.out)):
        print(f"wrote {os.path.join(args.out, name)}")
    return 0


def run_firmware(args) -> int:
    """`keras-expander firmware`: optional encoding, then build, run, verify and measure every build, or, with
    --library, write the source library of one build."""
    import dataclasses
    import json

    from keras_expander import datasets
    from keras_expander.firmware import deploy
    from keras_expander.firmware.decode_prune import decode_prune
    from keras_expander.firmware.model_edit import CompressionError
    from keras_expander.firmware.library import check_library_folder, write_library
    from keras_expander.firmware.rewrites import kernel_rewrite
    from keras_expander.firmware.toolchain import CORES, FirmwareError

    builds = [(target, kernels) for target in args.target for kernels in args.kernels
              if target in CORES or kernels == "reference"]
    try:
        if args.test_samples < 0:
            raise ValueError(f"Argument `--test-samples` must be >= 0. Received: {args.test_samples}")
        if args.library:
            check_library_folder(args.library, "--library")
            if len(args.target) != 1 or len(args.kernels) != 1 or args.target[0] == "host":
                raise ValueError(f"--library writes one library for one core: pass one Cortex-M --target and one "
                                 f"--kernels with it. Received: --target {' '.join(args.target)} --kernels "
                                 f"{' '.join(args.kernels)}")
        else:
            check_output_folder(args.out, "--out")
        if args.tflm_tree and len(builds) > 1:
            raise ValueError(f"--tflm-tree names one tree, but {len(builds)} builds were asked for; pass one "
                             f"--target and one --kernels with it.")
        for target in args.target:  # a board of another core than a --target is refused before any build
            deploy.board_budget(deploy.board_for(target, args.board), args.flash_kib, args.ram_kib)
        with open(args.tflite_path, "rb") as stream:
            plain = stream.read()
        x_test = y_test = None  # a library runs no test sequence; tflm_prune still verifies its encoding on them
        if args.data and (not args.library or args.compression == "tflm_prune"):
            arrays = datasets.load_npz(args.data, deploy.model_input_shape(plain), need=("x_test", "y_test"))
            x_test, y_test = arrays["x_test"], arrays["y_test"]
        elif not args.library or args.compression == "tflm_prune":
            (_, _), (x_test, y_test) = datasets.load_train_test(args.dataset, args.data_dir, snr_db=args.snr_db,
                                                                split_by=args.split_by,
                                                                speaker_pattern=args.speaker_pattern)
    except (OSError, ValueError) as error:
        print(f"keras-expander firmware: {error}", file=sys.stderr)
        return 2
    if args.test_samples and x_test is not None:
        x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    content, summary = plain, {"compression": args.compression}
    try:
        if args.compression == "tflm_prune":
            print("encoding the weights in TFLM's DECODE pruning format ...", flush=True)
            content, encoded = decode_prune(plain)
            mismatches = deploy.encoding_mismatches(plain, content, x_test)
            summary.update(plain_bytes=len(plain), encoded_bytes=len(content),
                           encoded_tensors=[dataclasses.asdict(t) for t in encoded],
                           bitexact_vs_plain_tflm_python=mismatches == 0)
            print(f"DECODE pruning: {len(plain):,} -> {len(content):,} bytes ({len(encoded)} tensors); outputs "
                  f"{'identical to' if mismatches == 0 else 'DIFFERENT from'} the plain model under the TFLite "
                  f"Micro interpreter on {len(x_test)} sequences", flush=True)
            if mismatches:
                raise FirmwareError(f"DECODE pruning changed the outputs of {mismatches} sequences; not deployed.")
        elif args.compression in ("ke_sparse", "ke_fused"):
            rewrite = kernel_rewrite(plain, args.compression)
            content = rewrite.content
            summary.update(plain_bytes=len(plain), encoded_bytes=len(content),
                           fused_layers=[dataclasses.asdict(layer) for layer in rewrite.fused_layers],
                           sparse_ops=[dataclasses.asdict(op) for op in rewrite.sparse_ops], notes=rewrite.notes)
            for layer in rewrite.fused_layers:
                print(f"fused: a {layer.cell} layer ({layer.steps} steps, {layer.units} units, {layer.replaced_ops} "
                      f"unrolled ops) -> {layer.op}", flush=True)
            for note in rewrite.notes:
                print(f"note: {note}", flush=True)
            checked = ("" if args.library else "; the firmware's outputs are checked against the plain model under "
                       "the TFLite Micro interpreter")
            print(f"keras_expander kernels: {len(plain):,} -> {len(content):,} bytes ({len(rewrite.fused_layers)} "
                  f"fused layer(s), {len(rewrite.sparse_ops)} sparse op(s)){checked}", flush=True)
        if args.library:
            print(f"writing the library for {builds[0][0]} with {builds[0][1]} kernels (the arena is measured "
                  f"under QEMU) ...", flush=True)
            try:
                folder = write_library(content, args.library, *builds[0], tree=args.tflm_tree)
            except ValueError as error:  # a model the C API cannot take (not int8), or the folder filled meanwhile
                print(f"keras-expander firmware: {error}", file=sys.stderr)
                return 2
            print(f"wrote {folder} (README.md says how to build it)")
            return 0
        reports = []
        with staged_folder(args.out, "--out") as staging:  # all builds, or the folder as it was
            for target, kernels in builds:
                print(f"building and running on {target} with {kernels} kernels ({len(x_test)} sequences) ...",
                      flush=True)
                report = deploy.deploy(content, x_test, y_test, target=target, kernels=kernels, tree=args.tflm_tree,
                                       out_dir=os.path.join(staging, f"{target}-{kernels}"), board=args.board,
                                       flash_kib=args.flash_kib, ram_kib=args.ram_kib, reference_content=plain)
                final_dir = os.path.join(os.path.abspath(args.out), f"{target}-{kernels}")
                reports.append(dataclasses.replace(report, project_dir=final_dir))
            write_atomic(os.path.join(staging, "report.json"),
                         json.dumps({**summary, "tflite_path": args.tflite_path, "dataset": args.dataset,
                                     "builds": [dataclasses.asdict(r) for r in reports]}, indent=2))
    except (CompressionError, FirmwareError) as error:
        print(f"keras-expander firmware: {error}", file=sys.stderr)
        return 1
    for line in deploy.format_reports(reports):
        print(line)
    if args.compression == "tflm_prune":
        print("tflm_prune: flash falls by the encoded weights, but each Invoke expands the weights of the op it runs "
              "into the arena: RAM grows by about their dense bytes.")
    print(f"wrote {os.path.join(args.out, 'report.json')}")
    return 0 if all(deploy.within_tolerance(r) for r in reports) else 1


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the process exit code (0 on success, 1 on a failed step, 2 on a bad model or
    argument)."""
    args = build_parser().parse_args(argv)
    import_tensorflow_quietly()
    if args.command == "export":
        return run_export(args)
    if args.command == "firmware":
        return run_firmware(args)
    from keras_expander.pruning.prune import load_model  # TensorFlow is loaded only once the arguments are valid

    try:
        if args.json:
            check_output_file(args.json, "--json")
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
