"""Export a pruned recurrent model to TFLite (float32 and full int8), verified under LiteRT and TFLite Micro.

Strips pruning wrappers, rebuilds a batch-1 copy, converts in a subprocess (a converter crash becomes a clear
error), runs every test sequence under LiteRT and TFLM with state reset, and writes into --out: <mode>.tflite,
report.json (ops, flatbuffer and gzip bytes, non-zero weights, smallest TFLM arena, TFLM ms per sequence,
accuracies, fits verdict), model_data.cc/.h and model_op_resolver.h.

  python export/export_tflite.py runs/demo/model.keras --mode float32 int8 --out runs/demo/export
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_expander import cli  # noqa: E402


def main(argv=None) -> int:
    return cli.main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
