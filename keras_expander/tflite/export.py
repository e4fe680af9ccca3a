"""Export a pruned recurrent model to TFLite (float32 or full int8) for TFLite Micro, and verify it.

Steps, each guarding a trap of the stack (docs/stack.md):
1. strip the pruning wrappers if present, and rebuild a batch-1 tf_keras copy with the same weights (only a fixed
   batch converts, and only tf_keras' LSTM fuses; Keras 3 models are rebuilt as tf_keras, see
   `keras_expander.tflite.converter_model`); SimpleRNN and GRU layers are unrolled for int8 (the WHILE-loop form crashes
   the int8 calibrator) and, for TFLM, when they return sequences (that WHILE loop never finishes under TFLM);
2. convert in a subprocess, so that a converter crash becomes an `ExportError` naming the model and the mode
   instead of killing the caller; the `.tflite` is written atomically;
3. verify under LiteRT and TFLM (state reset before every sequence): accuracy, agreement of predicted labels (read
   as Keras' accuracy metrics read them, `keras_expander.predictions`: argmax of several outputs, a single sigmoid
   or logit output thresholded), output error; an export that disagrees with Keras beyond the tolerance of its mode
   fails (`check_agreement`);
4. measure for the microcontroller: ops, flatbuffer and gzip -9 bytes, non-zero weights, the smallest TFLM arena
   that works (binary search over subprocess probes: TFLM aborts the process when the arena is too small), TFLM
   time per sequence on this host, and a model-only fits verdict (flatbuffer vs flash, arena vs RAM);
5. write the firmware files: `model_data.cc` / `model_data.h` and `model_op_resolver.h`.

Run as ``python -m keras_expander.tflite.export convert ...`` it is its own conversion worker, and as
``... backend-job JOB`` the TensorFlow-backend worker of `keras_expander.tflite.backend_export`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import numbers
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_expander import layers as layers_lib
from keras_expander.files import atomic_path, check_output_folder, die_with_parent, staged_folder, write_atomic
from keras_expander.firmware.project import model_ops, write_firmware_files
from keras_expander.frameworks import keras_flavour
from keras_expander.predictions import output_reading
from keras_expander.runtime import TFLiteModel, doubled_tflm_arena, tflm_arena_works
from keras_expander.tflite import backend_export
from keras_expander.tflite.converter_model import converter_model
from keras_expander.tflite.report import ExportError, ExportReport

MODES = ("float32", "int8", "dynamic_range")
TARGETS = ("tflm", "litert")
DEFAULT_FLASH_KIB = 1024  # Cortex-M4 class board, e.g. STM32F4 / nRF52840: 1 MiB flash
DEFAULT_RAM_KIB = 256  # and 256 KiB RAM
# Verification tolerances (`check_agreement`). float32: max |output - Keras output| <= FLOAT_TOLERANCE x
# max(1, max |Keras output|) under LiteRT and TFLM; the shipped LSTM(128) and GRU(128) exports differ by 7e-6
# with outputs up to about 20. Quantized modes: every pair of Keras, LiteRT and TFLM predicts the same class on at
# least MIN_AGREEMENT of the test sequences; the shipped 90 %-pruned LSTM(128) and GRU(128) int8 exports reach
# 0.996 to 0.9996 (results/export_mnist_*.json), a LiteRT or TFLM kernel that gets the model wrong 0 to 0.6.
FLOAT_TOLERANCE = 1e-3
MIN_AGREEMENT = 0.95


def check_mode(mode: str, target: str) -> None:
    """Refuses modes the target cannot run.

    Raises:
        ValueError: unknown `mode` or `target`, or "dynamic_range" for TFLM (its hybrid FULLY_CONNECTED kernels
            are not in TFLM).
    """
    if target not in TARGETS:
        raise ValueError(f"Argument `target` must be one of {TARGETS}. Received: target={target!r}")
    if mode not in MODES:
        raise ValueError(f"Argument `mode` must be one of {MODES}. Received: mode={mode!r}")
    if mode == "dynamic_range" and target == "tflm":
        raise ValueError("mode='dynamic_range' produces hybrid kernels (float activations, int8 weights) that TFLite "
                         "Micro cannot run; use mode='int8' (full integer) or pass target='litert'.")


def check_sparsity_encoding(sparsity_encoding: bool, target: str) -> None:
    """Refuses EXPERIMENTAL_SPARSITY for TFLM (it inserts a DENSIFY op that TFLM does not have).

    Raises:
        ValueError: `sparsity_encoding` with target "tflm".
    """
    if sparsity_encoding and target == "tflm":
        raise ValueError("sparsity_encoding=True (tf.lite.Optimize.EXPERIMENTAL_SPARSITY) adds a DENSIFY op that "
                         "TFLite Micro does not implement; pruned weights shrink the gzip size instead. Pass "
                         "target='litert' to use it anyway.")


def unrolled_layer_classes(model, mode: str, target: str) -> tuple[frozenset, frozenset]:
    """Which recurrent layer classes of `model` (RNN cells and Bidirectional layers included) a conversion unrolls.

    TFLite has no fused GRU or SimpleRNN op, so the converter makes them WHILE loops. That form crashes the int8
    calibrator (both are unrolled for int8), and with return_sequences=True it never finishes an invoke under
    TFLite Micro (such layers are unrolled for every TFLM export). Unrolled, each step is FULLY_CONNECTED and
    elementwise ops sharing one copy of the weights.

    Returns:
        (classes always unrolled, classes unrolled when they return sequences), subsets of {"SimpleRNN", "GRU"}.
    """
    classes = {"SimpleRNNCell": "SimpleRNN", "GRUCell": "GRU"}
    present, sequences = set(), set()
    for layer in model.layers:
        inner = layers_lib.unwrap(layer)
        for _, cell in layers_lib.recurrent_cells(layer):
            name = classes.get(type(cell).__name__)
            if name:
                present.add(name)
                if getattr(inner, "return_sequences", False):
                    sequences.add(name)
    if mode == "int8":
        return frozenset(present), frozenset()
    return frozenset(), frozenset(sequences) if target == "tflm" else frozenset()


def check_tflm_layers(model, target: str) -> None:
    """Refuses, before converting, what the converter emits in a form TFLite Micro cannot run.

    Raises:
        ValueError: a GRU with reset_after=False and target "tflm" (the converter gives it a SPLIT_V with a dynamic
            output tensor; TFLM allocates no dynamic tensors).
    """
    if target != "tflm":
        return
    for layer in model.layers:
        for _, cell in layers_lib.recurrent_cells(layer):
            if type(cell).__name__ == "GRUCell" and not getattr(cell, "reset_after", True):
                raise ValueError(f"Layer {layer.name!r}: a GRU with reset_after=False converts to a SPLIT_V op with "
                                 f"a dynamic output tensor, which TFLite Micro cannot allocate (\"Dynamic tensors "
                                 f"are not supported\"). Train it with reset_after=True (the Keras default), or "
                                 f"export with target='litert'.")


def _mask_producers(model) -> list[str]:
    """Layers that attach a mask to the sequences: Masking, and Embedding with mask_zero=True."""
    producers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Masking" or (kind == "Embedding" and getattr(layer, "mask_zero", False)):
            producers.append(f"{layer.name!r} ({kind}{', mask_zero=True' if kind == 'Embedding' else ''})")
    return producers


def _unfused_lstm_settings(cell, inner) -> list[str]:
    """The settings that keep an LSTM from the fused UNIDIRECTIONAL_SEQUENCE_LSTM op (tf_keras' LSTM uses its
    fusable implementation only with these defaults; otherwise it becomes a WHILE loop)."""
    config = cell.get_config()
    settings = [f"{key}={config[key]!r}" for key, fused in (("activation", "tanh"), ("recurrent_activation", "sigmoid"))
                if config.get(key) != fused]
    if not config.get("use_bias", True):
        settings.append("use_bias=False")
    return [] if getattr(inner, "unroll", False) else settings


def check_graph_model(model) -> None:
    """Refuses a subclassed model: the export reads its input and output shapes and rebuilds it from its config.

    Raises:
        ValueError: naming the model and giving the functional model of its layers to export instead.
    """
    from keras_expander.pruning.prune import SUBCLASSED
    from keras_expander.pruning.wrapper import is_graph_model

    if not is_graph_model(model):
        raise ValueError(SUBCLASSED.format(argument="model", function="export", name=model.name,
                                           kind=type(model).__name__))


def check_float_policy(model) -> None:
    """Refuses a model that computes or keeps its weights in another dtype than float32 (mixed_float16, float16,
    bfloat16, float64): the converter has no such kernels and fails deep in its IR, and TFLite Micro has none.

    Raises:
        ValueError: one line naming the model, the first such layer and its dtype policy, and what to do.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        policy = getattr(layer, "dtype_policy", None)
        dtypes = {str(getattr(policy, "compute_dtype", "float32")), str(getattr(policy, "variable_dtype", "float32"))}
        if dtypes - {"float32"}:
            raise ValueError(f"Model {model.name!r}: layer {layer.name!r} has dtype policy {policy.name!r} "
                             f"(computes in {policy.compute_dtype}), which the TFLite converter cannot convert and "
                             f"TFLite Micro cannot run; export takes float32 models. Rebuild the model after "
                             f"keras.mixed_precision.set_global_policy('float32') and copy the weights into it "
                             f"(float32_model.set_weights(model.get_weights())).")


def check_fixed_steps(model, steps: int | None = None) -> None:
    """Refuses a model whose input has a dimension of any size, e.g. `Input((None, F))`: TFLite Micro allocates
    every tensor before the first sequence, so the export needs fixed sizes (the batch size aside).

    Args:
        model: The stripped tf_keras or Keras 3 model.
        steps: The time steps of the test data, to name in the message (None: not known).

    Raises:
        ValueError: one line naming the model, its input shape and what to do.
    """
    shape = () if isinstance(model.input_shape, list) else tuple(model.input_shape[1:])
    if None in shape:
        fixed = ", ".join("T" if size is None else str(size) for size in shape)
        raise ValueError(f"Model {model.name!r} takes inputs of shape (batch, {', '.join(map(str, shape))}): a "
                         f"variable number of time steps, but the export needs a fixed one (TFLite Micro allocates "
                         f"every tensor before the first sequence). Rebuild the model with keras.Input(({fixed})), "
                         f"T the sequence length of your data{f' ({steps} in x_test)' if steps else ''}, and copy "
                         f"the weights into it with set_weights (they do not depend on T).")


def check_convertible(model, modes, target: str) -> None:
    """Refuses, before any conversion, a model whose conversion would crash or whose result TFLM cannot run.

    Args:
        model: The stripped tf_keras or Keras 3 model.
        modes: The modes to convert.
        target: "tflm" or "litert".

    Raises:
        ValueError: one line naming the layer and the setting, for masked sequences (Masking, Embedding with
            mask_zero=True) in int8 or for TFLM (their WHILE loop crashes the int8 calibrator, and TFLM has no
            REDUCE_ANY kernel), an Embedding in int8 (its token-id input would be quantized), an LSTM that is not
            the fused op (activation other than tanh, recurrent_activation other than sigmoid, use_bias=False) in
            int8 (the WHILE loop crashes the int8 calibrator), a GRU TFLM cannot run (`check_tflm_layers`), a
            dtype policy other than float32 (`check_float_policy`), an input with a variable number of time
            steps (`check_fixed_steps`), or a subclassed model (`check_graph_model`).
    """
    check_graph_model(model)
    check_float_policy(model)
    check_fixed_steps(model)
    int8 = "int8" in modes
    masks = _mask_producers(model)
    if masks and (int8 or target == "tflm"):
        raise ValueError(f"Layer {masks[0]}: masked sequences make the recurrent layers after it WHILE loops with mask "
                         f"ops, whose int8 conversion crashes the TFLite converter and which TFLite Micro cannot run "
                         f"(no REDUCE_ANY kernel). Export mode float32 with target='litert', or train without the "
                         f"mask (e.g. pad sequences at the start).")
    check_tflm_layers(model, target)
    if not int8:
        return
    for layer in model.layers:
        if type(layer).__name__ == "Embedding":
            raise ValueError(f"Layer {layer.name!r} (Embedding): its inputs are token ids, which mode='int8' would "
                             f"quantize to 8 bits and so look up other rows; export this model in mode float32.")
        inner = layers_lib.unwrap(layer)
        for _, cell in layers_lib.recurrent_cells(layer):
            settings = _unfused_lstm_settings(cell, inner) if type(cell).__name__ == "LSTMCell" else []
            if settings:
                raise ValueError(f"Layer {layer.name!r}: an LSTM with {', '.join(settings)} is not the fused "
                                 f"UNIDIRECTIONAL_SEQUENCE_LSTM op but a WHILE loop, whose int8 conversion crashes "
                                 f"the TFLite converter. Export mode float32, or train with activation='tanh', "
                                 f"recurrent_activation='sigmoid', use_bias=True.")


def check_verifiable(model, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Refuses, before any conversion, a model or test data the verification cannot compare.

    Args:
        model: The stripped tf_keras or Keras 3 model.
        x_test: Test sequences, shape (N,) + the model's input shape.
        y_test: Their labels, shape (N,).

    Raises:
        ValueError: a subclassed model (`check_graph_model`), an input with a variable number of time steps
            (`check_fixed_steps`), more than one input or output, an output that is not (batch, classes) (a
            TimeDistributed head, return_sequences=True at the end), test data of another shape than the model's
            input, an output the verification cannot read as predicted labels or labels it cannot compare
            (`output_reading`: a single output through tanh, multi-label sigmoid outputs, labels outside the
            classes).
    """
    check_graph_model(model)
    for kind, tensors in (("inputs", model.inputs), ("outputs", model.outputs)):
        if len(tensors) != 1:
            raise ValueError(f"Model {model.name!r} has {len(tensors)} {kind}; export supports one input and one "
                             f"output (the firmware harness feeds one tensor per sequence and reads one). Export a "
                             f"single-input, single-output model.")
    output_shape = tuple(model.outputs[0].shape)
    if len(output_shape) != 2:
        last = model.layers[-1]
        raise ValueError(f"Model {model.name!r} outputs shape {output_shape} (layer {last.name!r}, "
                         f"{type(last).__name__}); export verifies a classifier whose output is (batch, classes) "
                         f"against labels of shape (N,). End the model with return_sequences=False and a Dense "
                         f"layer instead of a per-step (TimeDistributed) head.")
    check_fixed_steps(model, np.shape(x_test)[1] if np.ndim(x_test) > 1 else None)
    if tuple(np.shape(x_test)[1:]) != tuple(model.input_shape[1:]) or len(y_test) != len(x_test):
        raise ValueError(f"Arguments `x_test` and `y_test` must have shapes (N,) + {tuple(model.input_shape[1:])} "
                         f"and (N,) for model {model.name!r}. Received: x_test of shape {np.shape(x_test)}, y_test "
                         f"of shape {np.shape(y_test)}.")
    output_reading(model, y=y_test, name="y_test").labels(y_test, "y_test")


def check_agreement(report: ExportReport, min_agreement: float = MIN_AGREEMENT) -> None:
    """Fails an export whose flatbuffer disagrees with Keras beyond the tolerance of its mode.

    float32: max |output - Keras output| <= `FLOAT_TOLERANCE` x max(1, max |Keras output|) under LiteRT and TFLM
    (predicted classes then differ only where two Keras outputs are that close). int8 and dynamic_range: Keras,
    LiteRT and TFLM predict the same label (by the report's `decision`: argmax, or a single output thresholded),
    pairwise, on at least `min_agreement` of the test sequences. Every mode: a model exported from another Keras
    backend computes on TensorFlow what it computed there, within the float32 tolerance.

    Args:
        report: The verified export (`verify_and_report`).
        min_agreement: Smallest fraction of equal predicted classes for the quantized modes, in (0, 1].

    Raises:
        ExportError: one line naming the model, the mode and every comparison out of tolerance.
    """
    runtimes = [("LiteRT", report.argmax_agreement_litert_keras, report.max_abs_diff_litert_keras)]
    if report.argmax_agreement_tflm_keras is not None:
        runtimes.append(("TFLM", report.argmax_agreement_tflm_keras, report.max_abs_diff_tflm_keras))
    tolerance = FLOAT_TOLERANCE * max(1.0, report.max_abs_keras_output)  # float32, and any mode between backends
    if report.mode == "float32":
        failures = [f"{name} differs from Keras by up to {diff:.3g} (tolerance {tolerance:.3g})"
                    for name, _, diff in runtimes if not diff <= tolerance]
        advice = ("The converted model computes something else than Keras: a layer setting the export does not "
                  "reproduce; please report it with the model.")
    else:
        pairs = [(f"{name} and Keras", agreement) for name, agreement, _ in runtimes]
        if report.argmax_agreement_tflm_litert is not None:
            pairs.append(("TFLM and LiteRT", report.argmax_agreement_tflm_litert))
        below = [f"{name} predict the same class on {100 * agreement:.1f} %" for name, agreement in pairs
                 if not agreement >= min_agreement]
        failures = [f"{', '.join(below)} of {report.samples} test sequences (at least {100 * min_agreement:g} % "
                    f"required)"] if below else []
        advice = ("Calibrate on data like the test data (representative_data, --representative-samples), export "
                  "float32, or lower min_agreement (--min-agreement) if that loss is acceptable.")
    if report.reference_backend is not None and not report.max_abs_diff_keras_reference <= tolerance:
        failures.insert(0, f"Keras on TensorFlow differs from Keras on {report.reference_backend} by up to "
                           f"{report.max_abs_diff_keras_reference:.3g} (tolerance {tolerance:.3g})")
        advice = ("The model computes something else on the TensorFlow backend than on the one it was trained "
                  "on: please report it with the model.")
    if failures:
        raise ExportError(f"Export of model {report.model!r} in mode {report.mode!r} failed verification: "
                          f"{'; '.join(failures)}; nothing was written. {advice}")


def converter_errors(stderr: str, limit: int = 3) -> list[str]:
    """The converter's own `error:` messages in a failed conversion's stderr, first ones first, each once.

    The converter prints them among MLIR locations, IR dumps and a Python traceback; the last lines of stderr often
    show only the IR. TensorFlow's log lines (``E0000 00:00:...``, e.g. "CUDA error: ...") are not the converter's.

    Args:
        stderr: The conversion subprocess's standard error.
        limit: Most messages returned.

    Returns:
        Up to `limit` messages (the text after "error: "), or [] when there are none (e.g. a crash by signal).
    """
    found = []
    for line in stderr.splitlines():
        if re.match(r"[IWEF]\d{4} ", line) or "error: " not in line:
            continue
        message = line.split("error: ", 1)[1].strip()
        if message and message not in found:
            found.append(message)
    return found[:limit]


def convert(model, mode: str = "float32", representative_data: np.ndarray | None = None, target: str = "tflm",
            sparsity_encoding: bool = False, timeout_s: float = 900.0,
            work_dir: str | None = None) -> tuple[bytes, list[str]]:
    """Converts a (stripped) tf_keras recurrent model to a TFLite flatbuffer in a subprocess.

    Args:
        model: tf_keras or Keras 3 model; pruning wrappers are stripped first, and the converter gets its tf_keras
            copy (`keras_expander.tflite.converter_model`).
        mode: "float32", "int8" (full integer: int8 kernels, int8 input and output; needs `representative_data`)
            or "dynamic_range" (LiteRT only).
        representative_data: float32 array of shape (N, T, F) from the training data, for int8 calibration.
        target: "tflm" (default; refuses what TFLM cannot run) or "litert".
        sparsity_encoding: Add tf.lite.Optimize.EXPERIMENTAL_SPARSITY (LiteRT only).
        timeout_s: Seconds before the conversion subprocess is killed.
        work_dir: Folder for its temporary files (default: the system's); the subprocess dies with its parent.

    Returns:
        (flatbuffer bytes, notes): notes list conversions applied, e.g. SimpleRNN unrolled for int8.

    Raises:
        ValueError: a mode/target combination TFLM cannot run, int8 without representative data, or a layer the
            export cannot rebuild exactly, convert or run (`check_convertible`, `converter_model`).
        ExportError: the converter failed or crashed; the message names the model, the mode, the exit status and
            the converter's own error messages (`converter_errors`; the last lines of its stderr when it gave none).
    """
    from keras_expander.pruning.prune import strip_pruning
    from keras_expander.pruning.wrapper import pruning_wrappers

    check_mode(mode, target)
    check_sparsity_encoding(sparsity_encoding, target)
    if mode == "int8" and (representative_data is None or len(representative_data) == 0):
        raise ValueError("mode='int8' needs `representative_data`: float32 samples of shape (N, T, F) from the "
                         "training data.")
    notes = []
    if pruning_wrappers(model):
        model = strip_pruning(model)
        notes.append("pruning wrappers stripped")
    check_convertible(model, (mode,), target)
    unroll, unroll_sequences = unrolled_layer_classes(model, mode, target)
    if unroll:
        notes.append(f"{' and '.join(sorted(unroll))} unrolled (unroll=True): the WHILE-loop form crashes the int8 "
                     f"calibrator")
        notes.append("FULLY_CONNECTED weights quantized per tensor (one scale per matrix, as in TFLite's fused "
                     "LSTM), so that each unrolled layer can become one fused op (keras-expander firmware "
                     "--compression ke_fused / ke_sparse)")
    if unroll_sequences:
        notes.append(f"{' and '.join(sorted(unroll_sequences))} layers with return_sequences=True unrolled: their "
                     f"WHILE-loop form does not finish under TFLite Micro")
    if keras_flavour(model) == "keras3":
        notes.append("Keras 3 model rebuilt as tf_keras for the converter (same weights)")
    single = converter_model(model, unroll, unroll_sequences)
    with tempfile.TemporaryDirectory(prefix="keras_expander_export_", dir=work_dir) as folder:
        model_path = os.path.join(folder, "model.keras")
        single.save(model_path)
        command = [sys.executable, "-m", "keras_expander.tflite.export", "convert", model_path, mode,
                   os.path.join(folder, "model.tflite")]
        if representative_data is not None:
            np.save(os.path.join(folder, "representative.npy"), np.asarray(representative_data, np.float32))
            command += ["--representative", os.path.join(folder, "representative.npy")]
        if sparsity_encoding:
            command.append("--sparsity-encoding")
        if unroll:
            command.append("--per-tensor-weights")
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired as error:
            raise ExportError(f"TFLite conversion of model {model.name!r} in mode {mode!r} did not finish in "
                              f"{timeout_s:.0f} s.") from error
        if result.returncode != 0:
            status = f"signal {-result.returncode}" if result.returncode < 0 else f"exit code {result.returncode}"
            errors = converter_errors(result.stderr)
            detail = ("converter error: " + "; ".join(errors) if errors
                      else "\n" + "\n".join(result.stderr.strip().splitlines()[-8:]))
            raise ExportError(f"TFLite conversion of model {model.name!r} in mode {mode!r} failed ({status}): "
                              f"{detail}")
        with open(os.path.join(folder, "model.tflite"), "rb") as stream:
            return stream.read(), notes


def _convert_worker(model_path: str, mode: str, out_path: str, representative: str | None,
                    sparsity_encoding: bool, per_tensor_weights: bool = False) -> None:
    from keras_expander.frameworks import tf
    from keras_expander.pruning.prune import load_model

    model = load_model(model_path)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if mode in ("int8", "dynamic_range"):
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparsity_encoding:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    # Per-channel scales would give every time step of an unrolled SimpleRNN/GRU per-row multipliers of its own
    # (each step's output has its own calibrated scale); per tensor, a step needs one.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = per_tensor_weights
    if mode == "int8":
        samples = np.load(representative)

        def representative_dataset():
            for sample in samples:
                yield [sample[None].astype(np.float32)]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    content = converter.convert()
    with open(out_path, "wb") as stream:
        stream.write(content)


def find_arena_size(model_content: bytes, granularity: int = 16, work_dir: str | None = None) -> int:
    """Smallest TFLM tensor arena (bytes) that loads the model and runs one invoke, by binary search.

    Each probe runs in a subprocess (`keras_expander.runtime.tflm_arena_works`), because TFLM aborts the process
    when the arena is too small.

    Args:
        model_content: The flatbuffer.
        granularity: Search resolution in bytes (TFLM aligns to 16).
        work_dir: Folder for its temporary files (default: the system's).

    Returns:
        The arena size in bytes, a multiple of `granularity`.

    Raises:
        ExportError: no arena up to 64 MiB works (the model cannot run under TFLM).
    """
    with tempfile.TemporaryDirectory(prefix="keras_expander_arena_", dir=work_dir) as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as stream:
            stream.write(model_content)
        try:
            high = doubled_tflm_arena(path, 4096)
        except RuntimeError as error:
            raise ExportError(str(error)) from None
        low = 0  # invariant: low fails (or is 0), high works
        while high - low > granularity:
            middle = (low + high) // 2 // granularity * granularity
            if middle <= low:
                break
            if tflm_arena_works(path, middle):
                high = middle
            else:
                low = middle
        return high


def weight_counts(model) -> tuple[int, int]:
    """(non-zero, total) entries over all weight tensors of a Keras model."""
    weights = model.get_weights()
    return int(sum(np.count_nonzero(w) for w in weights)), int(sum(w.size for w in weights))


def verify_and_report(model, model_content: bytes, mode: str, x_test: np.ndarray, y_test: np.ndarray,
                      tflite_path: str, target: str = "tflm", notes: list | None = None,
                      flash_kib: float = DEFAULT_FLASH_KIB, ram_kib: float = DEFAULT_RAM_KIB,
                      print_fn=None, work_dir: str | None = None, reference=None) -> ExportReport:
    """Runs the flatbuffer under LiteRT and TFLM on test sequences and measures it for a microcontroller.

    Args:
        model: The stripped Keras model the flatbuffer came from (any batch size).
        model_content: The flatbuffer.
        mode: Its conversion mode (for the report).
        x_test: float32 array of shape (N, T, F); y_test: int array of shape (N,), class indices (0 or 1 for a
            single output).
        tflite_path: Where it was written (for the report).
        target: "tflm" also runs TFLM and searches the arena; "litert" skips TFLM.
        notes: Conversion notes to carry into the report.
        flash_kib, ram_kib: Target budget in KiB.
        print_fn: Called with one progress line per step (e.g. `print`); None is silent.
        work_dir: Folder for temporary files of the arena search.
        reference: None, or (backend, outputs): the model's outputs on x_test, shape (N, outputs), computed on
            another Keras backend, compared with this process's Keras outputs.

    Returns:
        An `ExportReport`.
    """
    say = print_fn or (lambda line: None)
    say(f"[{mode}] running {len(x_test)} test sequences under Keras and LiteRT ...")
    keras_out = np.asarray(model.predict(x_test, batch_size=256, verbose=0), np.float32)
    litert = TFLiteModel(model_content, runtime="litert")
    litert_out = litert.predict(x_test)
    arena = tflm_out = tflm_ms = None
    if target == "tflm":
        say(f"[{mode}] searching the smallest TFLite Micro arena ...")
        arena = find_arena_size(model_content, work_dir=work_dir)
        say(f"[{mode}] running the test sequences under TFLite Micro ({arena:,}-byte arena) ...")
        tflm = TFLiteModel(model_content, runtime="tflm", arena_size=arena)
        start = time.perf_counter()
        tflm_out = tflm.predict(x_test)
        tflm_ms = 1000 * (time.perf_counter() - start) / len(x_test)
    nonzero, total = weight_counts(model)
    size = len(model_content)
    reading = output_reading(model, y=y_test, name="y_test")
    accuracy = lambda out: reading.accuracy(out, y_test, "y_test")  # noqa: E731
    agreement = reading.agreement
    largest_diff = lambda a, b: float(np.max(np.abs(a - b)))  # noqa: E731
    tflm_ran = tflm_out is not None
    return ExportReport(
        model=model.name, mode=mode, target=target, tflite_path=tflite_path, ops=model_ops(model_content),
        flatbuffer_bytes=size, gzip_bytes=len(gzip.compress(model_content, compresslevel=9)),
        nonzero_weights=nonzero, total_weights=total, arena_bytes=arena, tflm_ms_per_sequence=tflm_ms,
        samples=int(len(x_test)), decision=reading.description, keras_accuracy=accuracy(keras_out),
        litert_accuracy=accuracy(litert_out),
        tflm_accuracy=accuracy(tflm_out) if tflm_ran else None,
        argmax_agreement_litert_keras=agreement(litert_out, keras_out),
        argmax_agreement_tflm_keras=agreement(tflm_out, keras_out) if tflm_ran else None,
        argmax_agreement_tflm_litert=agreement(tflm_out, litert_out) if tflm_ran else None,
        max_abs_diff_litert_keras=largest_diff(litert_out, keras_out),
        max_abs_diff_tflm_keras=largest_diff(tflm_out, keras_out) if tflm_ran else None,
        max_abs_diff_tflm_litert=largest_diff(tflm_out, litert_out) if tflm_ran else None,
        max_abs_keras_output=float(np.max(np.abs(keras_out))), output_scale=litert.output_scale,
        notes=list(notes or []), flash_kib=flash_kib, ram_kib=ram_kib,
        fits=size <= flash_kib * 1024 and (arena is None or arena <= ram_kib * 1024),
        reference_backend=reference[0] if reference is not None else None,
        max_abs_diff_keras_reference=largest_diff(np.asarray(reference[1], np.float32).reshape(keras_out.shape),
                                                  keras_out) if reference is not None else None)


def format_report(reports: list[ExportReport], available_samples: int | None = None) -> list[str]:
    """Lines of a table of export reports, with units, and what the accuracy and the fits verdict measure.

    Args:
        reports: From `export_model`.
        available_samples: Size of the test split the verified sequences were taken from (its first ones), if
            larger than what was verified; the accuracy line says so.
    """
    rows = [("mode", "ops", "flatbuffer (B)", "gzip -9 (B)", "non-zero weights", "arena (B)", "TFLM ms/seq",
             "acc. Keras/LiteRT/TFLM (%)", "agree with Keras LiteRT/TFLM", "agree TFLM-LiteRT",
             "max |diff| LiteRT-Keras", "model fits")]
    show = lambda value, form: "-" if value is None else format(value, form)  # noqa: E731
    for r in reports:
        tflm_accuracy = "-" if r.tflm_accuracy is None else f"{100 * r.tflm_accuracy:.2f}"
        rows.append((r.mode, " ".join(r.ops), str(r.flatbuffer_bytes), str(r.gzip_bytes),
                     f"{r.nonzero_weights}/{r.total_weights}", str(r.arena_bytes or "-"),
                     show(r.tflm_ms_per_sequence, ".3f"),
                     f"{100 * r.keras_accuracy:.2f}/{100 * r.litert_accuracy:.2f}/{tflm_accuracy}",
                     f"{r.argmax_agreement_litert_keras:.4f}/{show(r.argmax_agreement_tflm_keras, '.4f')}",
                     show(r.argmax_agreement_tflm_litert, ".4f"), f"{r.max_abs_diff_litert_keras:.2e}",
                     f"{'yes' if r.fits else 'NO'} ({r.flash_kib:g} KiB flash, {r.ram_kib:g} KiB RAM)"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for r in reports:
        lines += [f"{r.mode}: {note}" for note in r.notes]
    if reports:
        samples = reports[0].samples
        share = (f"the first {samples:,} of the {available_samples:,}" if (available_samples or 0) > samples else
                 f"the {samples:,}")
        lines.append(f"accuracy and agreement: on {share} test sequences verified; predicted label: "
                     f"{reports[0].decision}.")
        lines.append("model fits: the flatbuffer alone against the flash and the arena alone against the RAM; the "
                     "TFLite Micro runtime, the C library and the stack are not counted (keras-expander firmware "
                     "measures the whole image).")
        if reports[0].reference_backend is not None:
            largest = max(r.max_abs_diff_keras_reference for r in reports)
            lines.append(f"backend: exported from Keras 3 on {reports[0].reference_backend} by a TensorFlow-backend "
                         f"process; Keras outputs there differ from those on {reports[0].reference_backend} by up "
                         f"to {largest:.2e}.")
    return lines


def check_finite_weights(model) -> None:
    """Refuses a model with NaN or infinite weights: its export would be meaningless.

    Raises:
        ValueError: naming the model, each weight with non-finite entries and how many.
    """
    broken = [f"{weight.name} ({int(np.count_nonzero(~np.isfinite(weight.numpy())))} entries)"
              for weight in model.weights if not np.isfinite(weight.numpy()).all()]
    if broken:
        raise ValueError(f"Model {model.name!r} has NaN or infinite weights in {', '.join(broken)}; a converted "
                         f"model would give meaningless outputs. Export a checkpoint from before training diverged.")


def export_model(model, modes=("float32", "int8"), x_test=None, y_test=None, representative_data=None,
                 out_dir: str = "export_out", target: str = "tflm", sparsity_encoding: bool = False,
                 flash_kib: float = DEFAULT_FLASH_KIB, ram_kib: float = DEFAULT_RAM_KIB,
                 firmware_mode: str | None = None, print_fn=None,
                 min_agreement: float = MIN_AGREEMENT, reference=None) -> list[ExportReport]:
    """Converts, verifies and measures a model in each mode; writes `<mode>.tflite`, `report.json` and firmware
    files (for `firmware_mode`, default: int8 when exported, else the first mode) into `out_dir`.

    The output folder is all-or-nothing: everything is built in a staging folder beside it and swapped in at the
    end, so an interrupted or failed export (even kill -9) leaves `out_dir` as it was. A mode that cannot be
    converted (`check_convertible`) refuses the whole export before the first conversion, so no work is lost: export
    the other modes alone. A mode whose flatbuffer disagrees with Keras beyond its tolerance (`check_agreement`)
    fails the export, and nothing is written. A Keras 3 model on the JAX or PyTorch backend is exported by a
    TensorFlow-backend subprocess (`keras_expander.tflite.backend_export`), which checks besides that it computes
    there what it computed here.

    Args:
        model: tf_keras or Keras 3 model, pruned (wrappers are stripped) or stripped.
        modes: Any of "float32", "int8" ("dynamic_range" with target="litert").
        x_test, y_test: Test sequences (N, T, F) float32 and labels (N,) for verification.
        representative_data: Training samples (N, T, F) for int8 calibration.
        out_dir: Output folder (created, or replaced as a whole).
        target: "tflm" or "litert".
        sparsity_encoding: tf.lite.Optimize.EXPERIMENTAL_SPARSITY (litert only).
        flash_kib, ram_kib: Target budget in KiB.
        firmware_mode: Which mode's flatbuffer becomes model_data.cc.
        print_fn: Called with one progress line per step (e.g. `print`); None is silent.
        min_agreement: Fraction of test sequences on which Keras, LiteRT and TFLM must predict the same class in
            the quantized modes, in (0, 1] (default `MIN_AGREEMENT`, 0.95).
        reference: None, or (backend, outputs of shape (N, outputs)): the model's outputs on x_test under another
            Keras backend (set by the subprocess export of a JAX or PyTorch model); each report records the largest
            difference, and one beyond the float32 tolerance fails the export.

    Returns:
        One `ExportReport` per mode.

    Raises:
        ValueError: bad mode/target combination, missing or mis-shaped data, a model the export cannot convert or
            verify (`check_convertible`, `check_verifiable`), NaN or infinite weights, `min_agreement` outside
            (0, 1], a `firmware_mode` not among `modes`, or an output folder that is an existing file or not
            writable (all checked before the conversion).
        ExportError: conversion or runtime failure, or verification out of tolerance (`out_dir` is left
            untouched).
    """
    from keras_expander.pruning.prune import strip_pruning
    from keras_expander.pruning.wrapper import pruning_wrappers

    for mode in modes:
        check_mode(mode, target)
    check_sparsity_encoding(sparsity_encoding, target)
    if x_test is None or y_test is None or len(x_test) == 0:
        raise ValueError("Arguments `x_test` and `y_test` are required and must not be empty: every export is "
                         "verified.")
    if isinstance(min_agreement, bool) or not isinstance(min_agreement, numbers.Real) or not 0 < min_agreement <= 1:
        raise ValueError(f"Argument `min_agreement` must be a number in (0, 1]. Received: "
                         f"min_agreement={min_agreement!r}")
    if firmware_mode is not None and firmware_mode not in modes:
        raise ValueError(f"Argument `firmware_mode` must be one of the exported modes {tuple(modes)}. Received: "
                         f"firmware_mode={firmware_mode!r}")
    check_output_folder(out_dir)
    if pruning_wrappers(model):
        model = strip_pruning(model)
    check_verifiable(model, x_test, y_test)
    check_finite_weights(model)
    if keras_flavour(model) == "keras3" and backend_export.keras_backend() != "tensorflow":
        worker = [sys.executable, "-m", __name__, "backend-job"]
        return backend_export.export_in_tensorflow(
            model, modes, x_test, y_test, representative_data, out_dir, worker, print_fn, target=target,
            sparsity_encoding=sparsity_encoding, flash_kib=flash_kib, ram_kib=ram_kib, firmware_mode=firmware_mode,
            min_agreement=min_agreement)
    check_convertible(model, modes, target)
    say = print_fn or (lambda line: None)
    reports, contents = [], {}
    with staged_folder(out_dir) as staging:
        for mode in modes:
            say(f"[{mode}] converting to TFLite in a subprocess ...")
            content, notes = convert(model, mode, representative_data, target, sparsity_encoding, work_dir=staging)
            write_atomic(os.path.join(staging, f"{mode}.tflite"), content)
            contents[mode] = content
            reports.append(verify_and_report(model, content, mode, x_test, y_test,
                                             os.path.join(out_dir, f"{mode}.tflite"), target, notes, flash_kib,
                                             ram_kib, print_fn=print_fn, work_dir=staging, reference=reference))
            check_agreement(reports[-1], min_agreement)
        chosen = firmware_mode or ("int8" if "int8" in modes else modes[0])
        write_firmware_files(contents[chosen], staging)
        write_atomic(os.path.join(staging, "report.json"),
                     json.dumps({"reports": [dataclasses.asdict(r) for r in reports], "firmware_mode": chosen},
                                indent=2))
    return reports


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m keras_expander.tflite.export", description="conversion worker")
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser("convert")
    convert_parser.add_argument("model_path")
    convert_parser.add_argument("mode", choices=MODES)
    convert_parser.add_argument("out_path")
    convert_parser.add_argument("--representative")
    convert_parser.add_argument("--sparsity-encoding", action="store_true")
    convert_parser.add_argument("--per-tensor-weights", action="store_true")
    job_parser = commands.add_parser("backend-job", help="export a JAX / PyTorch model (keras_expander.tflite."
                                                         "backend_export) in this TensorFlow-backend process")
    job_parser.add_argument("job_path")
    args = parser.parse_args(argv)
    if args.command == "backend-job":
        return _backend_job_worker(args.job_path)
    with atomic_path(args.out_path) as temporary:
        _convert_worker(args.model_path, args.mode, temporary, args.representative, args.sparsity_encoding,
                        args.per_tensor_weights)
    return 0


def _backend_job_worker(job_path: str) -> int:
    """The TensorFlow-backend side of `backend_export.export_in_tensorflow`: loads the job beside `job_path`,
    exports, and writes `backend_export.ERROR_FILE` there on a refusal or a failed step."""
    from keras_expander.pruning.prune import load_model

    die_with_parent()
    if os.getppid() == 1:  # the parent died before that
        return 1
    folder = os.path.dirname(job_path)
    with open(job_path) as stream:
        job = json.load(stream)
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    try:
        model = load_model(os.path.join(folder, "model.keras"))
        export_model(model, job["modes"], arrays["x_test"], arrays["y_test"],
                     arrays["representative_data"] if "representative_data" in arrays else None,
                     out_dir=job["out_dir"], print_fn=lambda line: print(line, flush=True),
                     reference=(job["backend"], arrays["reference"]), **job["options"])
    except (ValueError, ExportError) as error:
        with open(os.path.join(folder, backend_export.ERROR_FILE), "w") as stream:
            json.dump({"type": type(error).__name__, "message": str(error)}, stream)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
