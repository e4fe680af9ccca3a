"""Command line: ``keras-expander analyze MODEL_PATH [--json PATH]``."""

from __future__ import annotations

import argparse
import sys

from keras_expander import analysis
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the process exit code (0 on success, 2 on a bad model or argument)."""
    args = build_parser().parse_args(argv)
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
