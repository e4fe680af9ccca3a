"""Benchmark: what the microcontroller sees of a pruned recurrent model, measured on the device build.

For the dense and the 90 %- and 95 %-pruned sequential-MNIST LSTM(128) and SimpleRNN(128) (trained by the main job,
examples/sequential_mnist.py, with stop_rule="monitor" so that each reaches its target sparsity), exported to full
int8, and for each encoding (plain int8; TFLM DECODE pruning) and kernel set (TFLM reference; CMSIS-NN), it builds
the firmware for Cortex-M4F, runs every test sequence under QEMU (mps2-an386, -icount shift=0), and records flash,
RAM, arena, stack, instructions per inference (instructions, not cycles), accuracy, and whether every output byte
equals the pip TFLite Micro interpreter's. Writes results/mcu_footprint.json and results/mcu_footprint.md.

Resumable: trained models and int8 files are kept under --work-dir, and rows already in the JSON (same test
sample count) are not rerun.

  python benchmarks/mcu_footprint.py                 # all rows, all 10,000 test sequences (about 90 min, 2 cores)
  python benchmarks/mcu_footprint.py --test-samples 200 --cells lstm --sparsities 0.9 --out /tmp/mcu
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from keras_expander import compression, datasets  # noqa: E402
from keras_expander.firmware import deploy  # noqa: E402
from keras_expander.firmware.toolchain import FirmwareError  # noqa: E402
from keras_expander.io_utils import write_atomic  # noqa: E402

BUILDS = (("plain", "reference"), ("plain", "cmsis_nn"), ("tflm_prune", "reference"), ("tflm_prune", "cmsis_nn"))
ROW_FIELDS = ("model_flash_bytes", "image_flash_bytes", "ram_bytes", "arena_bytes", "stack_bytes",
              "instructions_per_inference", "accuracy", "bitexact_vs_tflm_python", "runtime_flash_bytes",
              "data_bytes", "bss_bytes", "instructions_first_inference", "samples", "run_seconds")


def train_int8(cell: str, sparsity: float, args, representative: np.ndarray) -> tuple[bytes, dict]:
    """Trains (or reuses) one model with the main job and converts it to full int8; returns (flatbuffer, info)."""
    from examples import sequential_mnist
    from keras_expander import export
    from keras_expander.prune import load_model

    folder = os.path.join(args.work_dir, f"{cell}-{sparsity:g}")
    train_argv = ["--cell", cell, "--units", "128", "--final-sparsity", str(sparsity), "--epochs", str(args.epochs),
                  "--stop-rule", "monitor", "--seed", str(args.seed), "--out", folder, "--verbose", "2"]
    if args.data_dir:
        train_argv += ["--data-dir", args.data_dir]
    summary_path, tflite_path = os.path.join(folder, "summary.json"), os.path.join(folder, "int8.tflite")
    if not os.path.exists(summary_path):
        print(f"[train] {cell} sparsity {sparsity:g}, {args.epochs} epochs", flush=True)
        sequential_mnist.run(sequential_mnist.parse_args(train_argv))
    with open(summary_path) as stream:
        summary = json.load(stream)
    if not os.path.exists(tflite_path):
        content, _ = export.convert(load_model(os.path.join(folder, "model.keras")), "int8", representative)
        write_atomic(tflite_path, content)
    with open(tflite_path, "rb") as stream:
        content = stream.read()
    info = {"train_command": "python examples/sequential_mnist.py " + " ".join(train_argv),
            "keras_test_accuracy": summary["test_accuracy"],
            "measured_sparsity": summary["layers"][0]["sparsity"] if summary["layers"] else 0.0}
    return content, info


def binary_entropy_bits(p: float) -> float:
    """H(p) = -p log2 p - (1 - p) log2 (1 - p), bits (0 at p = 0 or 1)."""
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def flash_limit_bytes(content: bytes) -> int:
    """Physical flash limit of a model: the rest of the flatbuffer, plus for every int8 weight tensor the smaller
    of its dense bytes and (non-zero bytes + the entropy of its mask, n H(1 - density) / 8 bytes)."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = model_editor.read(content)
    limit = len(content)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.dtype != schema.TensorType.INT8 or tensor.is_variable or not (tensor.buffer and
                                                                                    tensor.buffer.data):
                continue
            values = tensor.array.reshape(-1)
            nonzero = int(np.count_nonzero(values))
            encoded = nonzero + math.ceil(values.size * binary_entropy_bits(nonzero / values.size) / 8)
            limit -= max(0, values.size - encoded)
    return limit


def run_row(content: bytes, encoding: str, kernels: str, x_test, y_test, args, folder: str) -> dict:
    """One row: encode, build, run and measure on Cortex-M4; a refused build becomes a row with `error`."""
    row = {"encoding": encoding, "kernels": kernels}
    try:
        if encoding == "tflm_prune":
            plain = content
            content, encoded = compression.decode_prune(plain)
            row["encoded_tensors"] = len(encoded)
            row["bitexact_vs_plain_tflm_python"] = deploy.encoding_mismatches(plain, content, x_test) == 0
        report = deploy.deploy(content, x_test, y_test, target="cortex-m4", kernels=kernels, out_dir=folder)
    except (compression.CompressionError, FirmwareError) as error:
        row["error"] = " ".join(str(error).split())
        return row
    row.update({field: getattr(report, field) for field in ROW_FIELDS})
    row["tflite_bytes"] = len(content)
    return row


def to_markdown(payload: dict) -> str:
    rows = payload["rows"]
    lines = [f"# Pruned recurrent models on a Cortex-M4 (QEMU mps2-an386), {payload['date']}", "",
             f"Reproduce: `{payload['command']}`. {payload['test_sequences']:,} sequential-MNIST test sequences per "
             "row, run by the device build. Instructions are counted by QEMU (-icount), not cycles. RAM = .data + "
             ".bss (tight arena) + stack high-water mark.", "",
             "| cell | sparsity | encoding | kernels | model flash (B) | image flash (B) | RAM (B) | arena (B) | "
             "instructions/inference | accuracy (%) | bit-exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['cell']} | {row['sparsity']:g} | {row['encoding']} | {row['kernels']} | "
                         f"refused: {row['error']} ||||||| ")
            continue
        lines.append(f"| {row['cell']} | {row['sparsity']:g} | {row['encoding']} | {row['kernels']} | "
                     f"{row['model_flash_bytes']:,} | {row['image_flash_bytes']:,} | {row['ram_bytes']:,} | "
                     f"{row['arena_bytes']:,} | {row['instructions_per_inference']:,.0f} | "
                     f"{100 * row['accuracy']:.2f} | {'yes' if row['bitexact_vs_tflm_python'] else 'NO'} |")
    lines += ["", "Ratios to the plain int8 model of the same cell and sparsity (flash: model bytes; RAM; "
              "instructions against the same model on CMSIS-NN):", "",
              "| cell | sparsity | encoding | kernels | model flash | RAM | instructions | flash limit (B) |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        plain = next((r for r in rows if r["cell"] == row["cell"] and r["sparsity"] == row["sparsity"]
                      and r["encoding"] == "plain" and r["kernels"] == "reference" and "error" not in r), None)
        cmsis = next((r for r in rows if r["cell"] == row["cell"] and r["sparsity"] == row["sparsity"]
                      and r["encoding"] == "plain" and r["kernels"] == "cmsis_nn" and "error" not in r), None)
        if "error" in row or plain is None or cmsis is None or row is plain:
            continue
        lines.append(f"| {row['cell']} | {row['sparsity']:g} | {row['encoding']} | {row['kernels']} | "
                     f"{row['model_flash_bytes'] / plain['model_flash_bytes']:.3f} | "
                     f"{row['ram_bytes'] / plain['ram_bytes']:.3f} | "
                     f"{row['instructions_per_inference'] / cmsis['instructions_per_inference']:.3f} | "
                     f"{row.get('flash_limit_bytes', 0):,} |")
    lines += ["", "The DECODE-pruned rows trade RAM for flash: each Invoke expands the weights of the op it runs into "
              "the arena. CMSIS-NN's LSTM cannot take DECODE outputs (it precomputes kernel sums from constant "
              "weights in Prepare). Dense models get no DECODE row: no tensor gets smaller."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", choices=("lstm", "simple_rnn"), default=["lstm", "simple_rnn"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.0, 0.9, 0.95])
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of every model (default 4)")
    parser.add_argument("--test-samples", type=int, default=0, help="0 = all 10,000 test sequences")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--work-dir", default="runs/mcu_footprint")
    parser.add_argument("--out", default="results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x_train, _), (x_test, y_test) = datasets.sequential_mnist(args.data_dir)
    if args.test_samples:
        x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    representative = x_train[:: len(x_train) // 500][:500]
    json_path = os.path.join(args.out, "mcu_footprint.json")
    payload = {"rows": [], "models": {}}
    if os.path.exists(json_path):
        with open(json_path) as stream:
            payload = json.load(stream)
    payload.update(command="python benchmarks/mcu_footprint.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   date=datetime.date.today().isoformat(), test_sequences=int(len(x_test)),
                   hardware="Cortex-M4F emulated by QEMU 7.2 (mps2-an386); built with arm-none-eabi-gcc 12.2 "
                            "against ../shared/tflm trees")
    for cell in args.cells:
        for sparsity in args.sparsities:
            content, info = train_int8(cell, sparsity, args, representative)
            payload["models"][f"{cell}-{sparsity:g}"] = {**info, "flash_limit_bytes": flash_limit_bytes(content)}
            for encoding, kernels in BUILDS:
                if encoding != "plain" and sparsity == 0:
                    continue  # no tensor of a dense model gets smaller
                key = {"cell": cell, "sparsity": sparsity, "encoding": encoding, "kernels": kernels}
                done = next((r for r in payload["rows"] if all(r.get(k) == v for k, v in key.items())), None)
                if done and "error" not in done and done["samples"] == len(x_test):
                    continue
                print(f"[run] {cell} {sparsity:g} {encoding} {kernels}: {len(x_test)} sequences on Cortex-M4 ...",
                      flush=True)
                start = time.perf_counter()
                row = {**key, **run_row(content, encoding, kernels, x_test, y_test, args,
                                        os.path.join(args.work_dir, f"{cell}-{sparsity:g}", f"{encoding}-{kernels}"))}
                row["measured_sparsity"] = info["measured_sparsity"]
                row["flash_limit_bytes"] = payload["models"][f"{cell}-{sparsity:g}"]["flash_limit_bytes"]
                payload["rows"] = [r for r in payload["rows"] if r is not done] + [row]
                print(f"      {json.dumps({k: row.get(k) for k in ('model_flash_bytes', 'ram_bytes', 'instructions_per_inference', 'accuracy', 'bitexact_vs_tflm_python', 'error')})} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
                write_atomic(json_path, json.dumps(payload, indent=2))
    write_atomic(os.path.join(args.out, "mcu_footprint.md"), to_markdown(payload))
    print(to_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
