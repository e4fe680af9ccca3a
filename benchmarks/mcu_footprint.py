"""Benchmark: what the microcontroller sees of a pruned recurrent model, measured on the device build.

For the dense and the 90 %- and 95 %-pruned sequential-MNIST LSTM(128), SimpleRNN(128) and GRU(128) (trained by the
main job, examples/sequential_mnist.py, with stop_rule="monitor" so that each reaches its target sparsity), exported
to full int8, and for each build (plain int8 on TFLM's reference or CMSIS-NN kernels; TFLM DECODE pruning; the
fused SimpleRNN / GRU ops with dense weights, `ke_fused`; keras_expander's sparse kernels, `ke_sparse`, with
CMSIS-NN for the model's other ops), it builds the firmware for each core of --targets (Cortex-M4F by default;
Cortex-M7, M33 and M55 with the plain and sparse builds that issue 35 compares), runs every test sequence under QEMU
(the core's board of keras_expander.firmware.toolchain.CORES, -icount shift=0), and records flash, RAM, arena,
stack, instructions per inference (counted by QEMU), on the Cortex-M4 cycles per inference, per MAC and ms at the
board's clock (estimates: keras_expander.firmware.cycles on one traced sequence), accuracy, and whether every
output byte equals the pip TFLite Micro interpreter's. Writes
results/mcu_footprint.json and results/mcu_footprint.md.

Resumable: trained models and int8 files are kept under --work-dir, and rows already in the JSON (same test
sample count, with a cycle estimate) are not rerun.

  python benchmarks/mcu_footprint.py                 # all rows, all 10,000 test sequences (about 90 min, 2 cores)
  python benchmarks/mcu_footprint.py --test-samples 200 --cells lstm --sparsities 0.9 --out /tmp/mcu
  python benchmarks/mcu_footprint.py --targets cortex-m7 cortex-m33 cortex-m55 --cells lstm gru --sparsities 0.9
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from keras_expander import datasets  # noqa: E402
from keras_expander.files import write_atomic  # noqa: E402
from keras_expander.firmware import deploy  # noqa: E402
from keras_expander.firmware.decode_prune import decode_prune  # noqa: E402
from keras_expander.firmware.model_edit import CompressionError  # noqa: E402
from keras_expander.firmware.rewrites import kernel_rewrite  # noqa: E402
from keras_expander.firmware.toolchain import CORES, FirmwareError  # noqa: E402

# (encoding, kernels). "sparse": keras_expander's sparse kernels for the pruned LSTM / FULLY_CONNECTED ops and the
# fused SimpleRNN / GRU ops, CMSIS-NN for the model's other ops; "fused": the fused SimpleRNN / GRU ops with dense
# weights, CMSIS-NN for the other ops.
BUILDS = (("plain", "reference"), ("plain", "cmsis_nn"), ("tflm_prune", "reference"), ("tflm_prune", "cmsis_nn"),
          ("ke_fused", "fused"), ("ke_sparse", "sparse"))
# Builds that do not apply: an LSTM is already one fused op; DECODE on an unrolled SimpleRNN or GRU grows the
# flash (SimpleRNN(128) at 90 %: 1.56 x the plain model, 4.0 x its CMSIS-NN instructions, measured 2026-11-22), and
# the GRU's reference-kernel runs would take hours.
SKIPPED_BUILDS = {"lstm": {"ke_fused"}, "simple_rnn": {"tflm_prune"}, "gru": {"tflm_prune"}}
# On the other cores: the stock reference build (the byte-exactness criterion), CMSIS-NN and the sparse kernels.
OTHER_CORE_BUILDS = {("plain", "reference"), ("plain", "cmsis_nn"), ("ke_sparse", "sparse")}
ROW_FIELDS = ("model_flash_bytes", "image_flash_bytes", "ram_bytes", "arena_bytes", "stack_bytes",
              "instructions_per_inference", "accuracy", "bitexact_vs_tflm_python", "runtime_flash_bytes",
              "data_bytes", "bss_bytes", "instructions_first_inference", "samples", "run_seconds",
              "macs_per_inference", "nonzero_macs_per_inference", "cycles_per_inference", "cycles_per_mac",
              "cycles_per_nonzero_mac", "ms_at_clock", "clock_mhz", "flash_wait_states", "cycle_estimate")


def train_int8(cell: str, sparsity: float, args, representative: np.ndarray) -> tuple[bytes, dict]:
    """Trains (or reuses) one model with the main job and converts it to full int8; returns (flatbuffer, info)."""
    from benchmarks.recipes import main_job_command, run_main_job
    from keras_expander.pruning.prune import load_model
    from keras_expander.tflite import export

    folder = os.path.join(args.work_dir, f"{cell}-{sparsity:g}")
    train_argv = ["--cell", cell, "--units", "128", "--final-sparsity", str(sparsity), "--epochs", str(args.epochs),
                  "--stop-rule", "monitor", "--prune-begin", "0", "--seed", str(args.seed), "--out", folder,
                  "--verbose", "2"]
    if args.data_dir:
        train_argv += ["--data-dir", args.data_dir]
    summary_path, tflite_path = os.path.join(folder, "summary.json"), os.path.join(folder, "int8.tflite")
    if not os.path.exists(summary_path):
        print(f"[train] {cell} sparsity {sparsity:g}, {args.epochs} epochs", flush=True)
        run_main_job(train_argv)
    with open(summary_path) as stream:
        summary = json.load(stream)
    if not os.path.exists(tflite_path):
        content, _ = export.convert(load_model(os.path.join(folder, "model.keras")), "int8", representative)
        write_atomic(tflite_path, content)
    with open(tflite_path, "rb") as stream:
        content = stream.read()
    info = {"train_command": main_job_command(train_argv),
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


def run_row(content: bytes, target: str, encoding: str, kernels: str, x_test, y_test, folder: str) -> dict:
    """One row: encode, build, run and measure on `target`; a refused build becomes a row with `error`."""
    row = {"encoding": encoding, "kernels": kernels}
    plain = content
    try:
        if encoding == "tflm_prune":
            content, encoded = decode_prune(plain)
            row["encoded_tensors"] = len(encoded)
            row["bitexact_vs_plain_tflm_python"] = deploy.encoding_mismatches(plain, content, x_test) == 0
        elif encoding in ("ke_sparse", "ke_fused"):
            rewrite = kernel_rewrite(plain, encoding)
            content = rewrite.content
            row["sparse_ops"] = len(rewrite.sparse_ops)
            row["fused_layers"] = [layer.op for layer in rewrite.fused_layers]
        # Our kernels' outputs are compared with the plain model's under the pip interpreter.
        report = deploy.deploy(content, x_test, y_test, target=target,
                               kernels="cmsis_nn" if kernels in ("sparse", "fused") else kernels, out_dir=folder,
                               reference_content=plain)
    except (CompressionError, FirmwareError) as error:
        row["error"] = " ".join(str(error).split())
        return row
    row.update({field: getattr(report, field) for field in ROW_FIELDS})
    row["tflite_bytes"] = len(content)
    return row


def build_folder(work_dir: str, target: str, cell: str, sparsity: float, encoding: str, kernels: str) -> str:
    """Where one row's firmware project and run live (Cortex-M4 rows directly in the model's folder)."""
    name = f"{encoding}-{kernels}" if target == "cortex-m4" else os.path.join(target, f"{encoding}-{kernels}")
    return os.path.join(work_dir, f"{cell}-{sparsity:g}", name)


def compare_outputs(payload: dict, args, x_test) -> None:
    """Adds to every row, from the output files the device builds wrote:
    `bitexact_vs_stock_reference_build`: equal, byte for byte, to the plain model on TFLM's stock reference kernels
    built from the same tree for the same core (the criterion for encodings and the sparse kernels: same TFLM
    source), or for the Cortex-M4 where the core's own outputs are not at hand (`stock_reference_core` says which);
    `mismatched_sequences_vs_tflm_python` and `max_abs_difference_vs_tflm_python` (int8 steps): against the pip
    interpreter, which is built from a newer TFLM commit than the trees. Rows of an earlier run whose files are not
    in --work-dir (or whose files there are from a run with another sample count) keep the values that run
    computed."""
    python_outputs = {}
    for row in payload["rows"]:
        model = f"{row['cell']}-{row['sparsity']:g}"
        folder = os.path.join(args.work_dir, model)
        where = lambda encoding, kernels: os.path.join(  # noqa: E731
            build_folder(args.work_dir, row["target"], row["cell"], row["sparsity"], encoding, kernels), "run",
            "outputs.bin")
        path = where(row["encoding"], row["kernels"])
        if "error" in row or not os.path.exists(path):
            continue
        outputs = np.fromfile(path, np.int8)
        # The same core's stock build, else the Cortex-M4's (same tree and source; a run with another sample
        # count may have rewritten the core's own file).
        stock, stock_core = None, None
        for core in dict.fromkeys((row["target"], "cortex-m4")):
            file = os.path.join(build_folder(args.work_dir, core, row["cell"], row["sparsity"], "plain", "reference"),
                                "run", "outputs.bin")
            if os.path.exists(file) and os.path.getsize(file) == outputs.size:
                stock, stock_core = np.fromfile(file, np.int8), core
                break
        if stock is None or outputs.size % row["samples"]:  # files of a run with another sample count
            continue
        outputs, stock = outputs.reshape(row["samples"], -1), stock.reshape(row["samples"], -1)
        row["stock_reference_core"] = stock_core
        if model not in python_outputs:
            with open(os.path.join(folder, "int8.tflite"), "rb") as stream:
                plain = stream.read()
            python_outputs[model] = deploy.tflm_python_outputs(plain, deploy.device_inputs(plain, x_test)).view(np.int8)
        expected = python_outputs[model]
        row["bitexact_vs_stock_reference_build"] = bool(np.array_equal(outputs, stock))
        row["mismatched_sequences_vs_tflm_python"] = int(np.sum(np.any(outputs != expected, axis=1)))
        row["max_abs_difference_vs_tflm_python"] = int(np.max(np.abs(outputs.astype(int) - expected.astype(int))))


# Targets of the kernels (issues 11 and 21): (cell, sparsity) -> (flash / plain, instructions / plain on CMSIS-NN,
# arena bytes or None) for the ke_sparse build.
TARGETS = {("lstm", 0.9): (0.30, 0.35, None), ("lstm", 0.95): (0.22, 0.25, None),
           ("simple_rnn", 0.9): (0.30, 0.35, 12_000), ("gru", 0.9): (0.30, 0.35, 16_000)}
# Cycles (estimate) of the 90 %-sparse kernels against the plain model on CMSIS-NN (issue 34), per cell.
CYCLE_TARGETS = {("lstm", 0.9): 0.25, ("simple_rnn", 0.9): 0.25, ("gru", 0.9): 0.25}


def cycle_ratio(row: dict, other: dict) -> float | None:
    """Cycles (estimate) of `row` over those of `other`; None when either was measured before the estimate."""
    cycles = row.get("cycles_per_inference"), other.get("cycles_per_inference")
    return None if None in cycles else cycles[0] / cycles[1]


# The matrix-vector loops among the estimate's functions: CMSIS-NN's int8 kernels and our dense and sparse row loops.
MATRIX_LOOPS = re.compile(r"vec_mat_mul|SparseFc|DenseFc|_rows(_|$)")


def cycles_table(rows: list) -> list[str]:
    """Markdown lines: where each CMSIS-NN, fused and sparse row's cycles (estimate) go: the matrix-vector loops'
    cycles per MAC they perform (per non-zero MAC for `ke_sparse`) and share, and the other functions with most
    cycles."""
    lines = ["| cell | sparsity | encoding | matrix loops: cycles / MAC (est.) | matrix loops: share | "
             "other functions with most cycles (share) |", "|---|---|---|---|---|---|"]
    for row in rows:
        estimate = row.get("cycle_estimate")
        if "error" in row or not estimate or row["kernels"] == "reference":
            continue
        functions = estimate["top_functions"]
        matrix = [name for name in functions if MATRIX_LOOPS.search(name)]
        macs = row["nonzero_macs_per_inference" if row["encoding"] == "ke_sparse" else "macs_per_inference"]
        others = ", ".join(f"{name.split('::')[-1]} {functions[name]['share']:.0%}"
                           for name in functions if name not in matrix and functions[name]["share"] >= 0.03)
        lines.append(f"| {row['cell']} | {row['sparsity']:g} | {row['encoding']} | "
                     f"{sum(functions[name]['cycles'] for name in matrix) / macs:.2f} | "
                     f"{sum(functions[name]['share'] for name in matrix):.0%} | {others} |")
    return lines


def targets_table(rows: list, find) -> list[str]:
    """Markdown lines: each target of the sparse kernels against the measured ratio, met or not."""
    lines = ["| cell | sparsity | flash / plain (target) | instructions / plain CMSIS-NN (target) | arena (B) (target) "
             "| met | cycles / plain CMSIS-NN, estimate (target) | met |", "|---|---|---|---|---|---|---|---|"]
    for (cell, sparsity), (flash, instructions, arena) in TARGETS.items():
        row, plain = find(cell, sparsity, "ke_sparse", "sparse"), find(cell, sparsity, "plain", "cmsis_nn")
        if row is None or plain is None:
            continue
        ratios = (row["model_flash_bytes"] / plain["model_flash_bytes"],
                  row["instructions_per_inference"] / plain["instructions_per_inference"])
        met = ratios[0] <= flash and ratios[1] <= instructions and (arena is None or row["arena_bytes"] <= arena)
        cycles, cycle_target = cycle_ratio(row, plain), CYCLE_TARGETS.get((cell, sparsity))
        if cycles is None or cycle_target is None:
            cycle_cells = f"- ({'-' if cycle_target is None else f'<= {cycle_target}'}) | - |"
        else:
            cycle_cells = f"{cycles:.3f} (<= {cycle_target}) | {'yes' if cycles <= cycle_target else 'NO'} |"
        lines.append(f"| {cell} | {sparsity:g} | {ratios[0]:.3f} (<= {flash}) | {ratios[1]:.3f} (<= {instructions}) "
                     f"| {row['arena_bytes']:,} ({'-' if arena is None else f'<= {arena:,}'}) | "
                     f"{'yes' if met else 'NO'} | {cycle_cells}")
    return lines


# Instructions of the 90 %-sparse kernels against CMSIS-NN on the plain model, on every core (issue 35).
CORE_TARGETS = {("lstm", 0.9): 0.40, ("gru", 0.9): 0.40}


def cores_table(rows: list) -> list[str]:
    """Markdown lines: the plain (reference, CMSIS-NN) and sparse builds on every core, and the sparse build's
    instructions over CMSIS-NN's on the same core against `CORE_TARGETS`."""
    lines = ["| core | cell | sparsity | encoding | kernels | model flash (B) | image flash (B) | RAM (B) | "
             "arena (B) | instructions/inference | accuracy (%) | bit-exact vs stock | "
             "instructions / plain CMSIS-NN (target) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if ("error" in row or (row["encoding"], row["kernels"]) not in OTHER_CORE_BUILDS
                or (row["cell"], row["sparsity"]) not in CORE_TARGETS):
            continue
        plain = next((r for r in rows if (r["target"], r["cell"], r["sparsity"], r["encoding"], r["kernels"]) ==
                      (row["target"], row["cell"], row["sparsity"], "plain", "cmsis_nn") and "error" not in r), None)
        ratio, target = "-", CORE_TARGETS.get((row["cell"], row["sparsity"]))
        if row["encoding"] == "ke_sparse" and plain is not None:
            value = row["instructions_per_inference"] / plain["instructions_per_inference"]
            ratio = f"{value:.3f} (<= {target}): {'met' if target is not None and value <= target else 'NOT met'}"
        lines.append(f"| {row['target']} | {row['cell']} | {row['sparsity']:g} | {row['encoding']} | "
                     f"{row['kernels']} | {row['model_flash_bytes']:,} | {row['image_flash_bytes']:,} | "
                     f"{row['ram_bytes']:,} | {row['arena_bytes']:,} | {row['instructions_per_inference']:,.0f} | "
                     f"{100 * row['accuracy']:.2f} | {'yes' if row['bitexact_vs_stock_reference_build'] else 'NO'} | "
                     f"{ratio} |")
    return lines


def to_markdown(payload: dict) -> str:
    every_core = payload["rows"]
    rows = [row for row in every_core if row["target"] == "cortex-m4"]
    runs = {}  # (date, command, cell) -> (core, encoding) of the rows that command produced
    for row in every_core:
        key = (row.get("date", payload["date"]), row.get("command", payload["command"]), row["cell"])
        runs.setdefault(key, set()).add(row["encoding"] if row["target"] == "cortex-m4"
                                        else f"{row['target']} {row['encoding']}")
    reproduce = "; ".join(f"{cell} {'/'.join(sorted(encodings))} rows: `{command}` ({date})"
                          for (date, command, cell), encodings in sorted(runs.items()))
    lines = [f"# Pruned recurrent models on Cortex-M cores (QEMU), {payload['date']}", "",
             f"Reproduce: {reproduce}. {payload['test_sequences']:,} sequential-MNIST test sequences per "
             "row, run by the device build. Instructions are counted by QEMU (-icount), not cycles; cycles are an "
             "estimate (the Cortex-M4 manual's timings applied to the instructions QEMU executed for one test "
             "sequence, zero flash wait states: keras_expander/firmware/cycles.py), per MAC of the dense model, and "
             "ms at the nRF52840 profile's 64 MHz; '-' where a row was measured before the estimate. RAM = .data + "
             ".bss (tight arena) + stack high-water mark. SimpleRNN and GRU are exported unrolled with per-tensor "
             "weight scales (plain rows); `ke_fused` runs each unrolled layer as one fused op with dense weights, "
             "`ke_sparse` the fused op with sparse weights (and LSTM / FULLY_CONNECTED on the sparse kernels); both "
             "use CMSIS-NN for the model's other ops.", "",
             "*bit-exact vs stock*: every output byte equals the plain model's on TFLM's stock reference kernels, "
             "built from the same tree. *vs TFLM Python*: sequences whose output differs from the pip TFLite Micro "
             "interpreter (built from TFLM commit 8f6596d, 2026-10-23; the trees are 90b983c, 2026-08-20), and by "
             "how many int8 steps at most.", "",
             "| cell | sparsity | encoding | kernels | model flash (B) | image flash (B) | RAM (B) | arena (B) | "
             "instructions/inference | cycles/inference (est.) | cycles/MAC (est.) | ms (est.) | accuracy (%) | "
             "bit-exact vs stock | vs TFLM Python |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    shown = lambda value, form: "-" if value is None else format(value, form)  # noqa: E731
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['cell']} | {row['sparsity']:g} | {row['encoding']} | {row['kernels']} | "
                         f"refused: {row['error']} ||||||||||| ")
            continue
        lines.append(f"| {row['cell']} | {row['sparsity']:g} | {row['encoding']} | {row['kernels']} | "
                     f"{row['model_flash_bytes']:,} | {row['image_flash_bytes']:,} | {row['ram_bytes']:,} | "
                     f"{row['arena_bytes']:,} | {row['instructions_per_inference']:,.0f} | "
                     f"{shown(row.get('cycles_per_inference'), ',.0f')} | {shown(row.get('cycles_per_mac'), '.2f')} | "
                     f"{shown(row.get('ms_at_clock'), '.1f')} | {100 * row['accuracy']:.2f} | "
                     f"{'yes' if row['bitexact_vs_stock_reference_build'] else 'NO'} | "
                     f"{row['mismatched_sequences_vs_tflm_python']} differ, "
                     f"max {row['max_abs_difference_vs_tflm_python']} |")
    lines += ["", "Ratios. *plain*: the plain int8 model of the same cell and sparsity (RAM and instructions on "
              "CMSIS-NN; arena on the reference kernels); *dense*: the dense model on CMSIS-NN (the gain against not "
              "pruning at all); *limit*: the physical flash limit (non-zero bytes + the entropy of each mask + the "
              "rest of the model) over the plain model's flash.", "",
              "| cell | sparsity | encoding | kernels | flash / plain | RAM / plain | arena / plain ref. | "
              "instructions / plain | cycles / plain (est.) | flash / dense | RAM / dense | instructions / dense | "
              "cycles / dense (est.) | limit / plain |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


    def find(cell, sparsity, encoding, kernels):
        return next((r for r in rows if (r["cell"], r["sparsity"], r["encoding"], r["kernels"])
                     == (cell, sparsity, encoding, kernels) and "error" not in r), None)

    for row in rows:
        plain_ref = find(row["cell"], row["sparsity"], "plain", "reference")
        plain = find(row["cell"], row["sparsity"], "plain", "cmsis_nn")
        dense = find(row["cell"], 0.0, "plain", "cmsis_nn")
        if "error" in row or None in (plain_ref, plain, dense) or row["encoding"] == "plain":
            continue
        lines.append(
            f"| {row['cell']} | {row['sparsity']:g} | {row['encoding']} | {row['kernels']} | "
            f"{row['model_flash_bytes'] / plain['model_flash_bytes']:.3f} | "
            f"{row['ram_bytes'] / plain['ram_bytes']:.3f} | "
            f"{row['arena_bytes'] / plain_ref['arena_bytes']:.3f} | "
            f"{row['instructions_per_inference'] / plain['instructions_per_inference']:.3f} | "
            f"{shown(cycle_ratio(row, plain), '.3f')} | "
            f"{row['model_flash_bytes'] / dense['model_flash_bytes']:.3f} | "
            f"{row['ram_bytes'] / dense['ram_bytes']:.3f} | "
            f"{row['instructions_per_inference'] / dense['instructions_per_inference']:.3f} | "
            f"{shown(cycle_ratio(row, dense), '.3f')} | "
            f"{row['flash_limit_bytes'] / plain['model_flash_bytes']:.3f} |")
    lines += ["", "The DECODE-pruned rows trade RAM for flash: each Invoke expands the weights of the op it runs into "
              "the arena. CMSIS-NN's LSTM cannot take DECODE outputs (it precomputes kernel sums from constant "
              "weights in Prepare). Dense models get no DECODE or sparse row: no tensor gets smaller. The sparse "
              "rows run keras_expander's sparse int8 kernels (weights read in place from flash) and CMSIS-NN for the "
              "other ops; like every row, their outputs are compared byte for byte with the plain model on TFLM's "
              "stock reference kernels built from the same tree.", "", "Targets of the sparse kernels (`ke_sparse` "
              "against the plain model on CMSIS-NN):", "", *targets_table(rows, find), "",
              "Where the cycles go (estimate, the traced sequence): the matrix-vector loops (CMSIS-NN's "
              "`arm_nn_vec_mat_mul*`, our `DenseFc`, `SparseFc` and assembly row loops `ke_sparse_*_rows_*` and "
              "`ke_fused_rnn_fc_rows*`) per MAC "
              "they perform, i.e. per non-zero MAC for `ke_sparse` (the output layer's MACs included), and the other "
              "functions with at least 3 % of the cycles.", "", *cycles_table(rows), "",
              "## Every core", "",
              "The Cortex-M4 (mps2-an386), M7 (mps2-an500), M33 (mps2-an505, Secure) and M55 (mps3-an547) builds of "
              "the same int8 models from the same trees; CMSIS-NN compiles its DSP code for the M4, M7 and M33 and "
              "its Helium (MVE) code for the M55; our sparse LSTM's gate rows run Helium code on the M55 (gathers "
              "of the int8 activations by index, one VMLADAV per row of up to 16 non-zeros), our other kernels "
              "scalar Thumb-2 on every core. Instructions are counted by QEMU: on the M55 one MVE instruction works "
              "on up to 16 int8 lanes in several beats, so instruction counts understate the cycles of Helium code "
              "(CMSIS-NN's and our LSTM's) more than those of scalar code. There is no cycle model for cores other "
              "than the M4 (keras_expander/firmware/cycles.py).", "",
              *cores_table(every_core)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", choices=("lstm", "simple_rnn", "gru"),
                        default=["lstm", "simple_rnn", "gru"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.0, 0.9, 0.95])
    parser.add_argument("--targets", nargs="+", choices=tuple(CORES), default=["cortex-m4"],
                        help="Cortex-M cores to build for (default cortex-m4; the others get the plain reference, "
                             "plain CMSIS-NN and sparse builds)")
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
        for row in payload["rows"]:  # rows of earlier runs keep the date and command that produced them
            row.setdefault("date", payload["date"])
            row.setdefault("command", payload["command"])
            row.setdefault("target", "cortex-m4")
    payload.update(command="python benchmarks/mcu_footprint.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   date=datetime.date.today().isoformat(), test_sequences=int(len(x_test)),
                   hardware="Cortex-M cores emulated by QEMU 7.2 (the boards of toolchain.CORES); built with "
                            "arm-none-eabi-gcc 12.2 against ../shared/tflm trees")
    for cell in args.cells:
        for sparsity in args.sparsities:
            content, info = train_int8(cell, sparsity, args, representative)
            payload["models"][f"{cell}-{sparsity:g}"] = {**info, "flash_limit_bytes": flash_limit_bytes(content)}
            for target, (encoding, kernels) in itertools.product(args.targets, BUILDS):
                if encoding in SKIPPED_BUILDS.get(cell, ()) or (encoding in ("tflm_prune", "ke_sparse")
                                                                and sparsity == 0):
                    continue  # no tensor of a dense model gets smaller
                if target != "cortex-m4" and (encoding, kernels) not in OTHER_CORE_BUILDS:
                    continue
                key = {"target": target, "cell": cell, "sparsity": sparsity, "encoding": encoding, "kernels": kernels}
                done = next((r for r in payload["rows"] if all(r.get(k) == v for k, v in key.items())), None)
                if (done and "error" not in done and done["samples"] == len(x_test)
                        and "cycles_per_inference" in done):  # rows from before the cycle estimate are rerun
                    continue
                print(f"[run] {target} {cell} {sparsity:g} {encoding} {kernels}: {len(x_test)} sequences ...",
                      flush=True)
                start = time.perf_counter()
                row = {**key, **run_row(content, target, encoding, kernels, x_test, y_test,
                                        build_folder(args.work_dir, target, cell, sparsity, encoding, kernels))}
                row["measured_sparsity"] = info["measured_sparsity"]
                row.update(date=payload["date"], command=payload["command"])
                row["flash_limit_bytes"] = payload["models"][f"{cell}-{sparsity:g}"]["flash_limit_bytes"]
                payload["rows"] = [r for r in payload["rows"] if r is not done] + [row]
                shown = ("model_flash_bytes", "ram_bytes", "instructions_per_inference", "cycles_per_inference",
                         "accuracy", "bitexact_vs_tflm_python", "error")
                print(f"      {json.dumps({k: row.get(k) for k in shown})} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
                write_atomic(json_path, json.dumps(payload, indent=2))
    compare_outputs(payload, args, x_test)
    builds = [f"{encoding}-{kernels}" for encoding, kernels in BUILDS]
    payload["rows"].sort(key=lambda r: (list(CORES).index(r["target"]), r["cell"], r["sparsity"],
                                        builds.index(f"{r['encoding']}-{r['kernels']}")))
    write_atomic(json_path, json.dumps(payload, indent=2))
    write_atomic(os.path.join(args.out, "mcu_footprint.md"), to_markdown(payload))
    print(to_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
