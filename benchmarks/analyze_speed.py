"""Benchmark: wall time of `analyze` per layer and of `spectral_metrics` per graph, dense vs sparse solver.

Prints a table and writes results/analyze_speed.json.

  python benchmarks/analyze_speed.py --repeats 20 --out results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from keras_expander import spectral  # noqa: E402
from keras_expander.expansion import analysis  # noqa: E402
from keras_expander.files import write_atomic  # noqa: E402
from keras_expander.frameworks import tf_keras  # noqa: E402


def best_of(function, repeats: int) -> float:
    """Median wall time of `function()` over `repeats` calls after one warm-up call, in milliseconds."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    rows = []
    for cell, features in (("LSTM", 28), ("SimpleRNN", 28), ("LSTM", 96)):
        layer = getattr(tf_keras.layers, cell)(128, name=cell.lower())
        layer.build((None, 28, features))
        for views in (("per_gate",), ("per_gate", "union", "stacked")):
            ms = best_of(lambda: analysis.analyze_layer(layer, gate_views=views), args.repeats)
            rows.append({"what": f"analyze_layer {cell}(128), input {features}, views {'+'.join(views)}",
                         "median_ms": ms})
    rng = np.random.default_rng(0)
    for shape in ((28, 128), (128, 128), (128, 512), (512, 512), (1024, 1024)):
        mask = (rng.random(shape) < 0.1).astype(float)
        for method in ("dense", "sparse"):
            with spectral.single_threaded_blas():  # as analyze and the callback run it
                ms = best_of(lambda: spectral.top_singular_values(mask, method=method), args.repeats)
            rows.append({"what": f"top_singular_values {shape[0]}x{shape[1]} q=10 % {method}", "median_ms": ms})
    width = max(len(row["what"]) for row in rows)
    print(f"{'measurement'.ljust(width)}  median (ms)")
    for row in rows:
        print(f"{row['what'].ljust(width)}  {row['median_ms']:10.2f}")
    payload = {"command": "python benchmarks/analyze_speed.py --repeats %d" % args.repeats,
               "hardware": f"{os.cpu_count()} CPU cores", "rows": rows}
    write_atomic(os.path.join(args.out, "analyze_speed.json"), json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
