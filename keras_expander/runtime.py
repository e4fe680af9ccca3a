"""Run a `.tflite` model under LiteRT (ai_edge_litert) or TensorFlow Lite for Microcontrollers (tflite_micro).

One `predict(x)` for both: float inputs are quantized with round and clip when the model's input is int8, outputs
are dequantized, and the interpreter state is reset before every sequence (the fused LSTM keeps its state across
invokes in every runtime). No TensorFlow import: both runtimes are standalone packages.

TFLite Micro aborts the whole process when its arena is too small for an invoke, so arena sizes are tried in
subprocesses (`tflm_arena_works`, `doubled_tflm_arena`); run as ``python -m keras_expander.runtime PATH BYTES``
this module is that probe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

RUNTIMES = ("litert", "tflm")
MAX_TFLM_ARENA = 64 << 20  # bytes; a model that needs more does not fit a microcontroller either


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Affine quantization q = clip(round(x / scale) + zero_point) to the range of `dtype` (int8 or uint8)."""
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x, np.float64) / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = (q - zero_point) * scale, as float32."""
    return ((np.asarray(q, np.float64) - zero_point) * scale).astype(np.float32)


def _scale_zero_point(details: dict) -> tuple[float, int] | None:
    parameters = details.get("quantization_parameters", {})
    scales = parameters.get("scales", ())
    if len(scales) == 0:
        return None
    return float(scales[0]), int(parameters["zero_points"][0])


class TFLiteModel:
    """A `.tflite` flatbuffer loaded in one runtime, with a batch `predict` over independent sequences.

    Args:
        model_content: The flatbuffer bytes (batch size 1, one input, one output).
        runtime: "litert" (ai_edge_litert interpreter, the reference) or "tflm" (tflite_micro Python runtime).
        arena_size: TFLM tensor arena in bytes (ignored by LiteRT). TFLM aborts the whole process when the arena is
            too small, so pass a size found by `keras_expander.tflite.export.find_arena_size` or a generous one.
        num_threads: LiteRT threads (1 keeps results reproducible and timing comparable with TFLM).

    Raises:
        ValueError: unknown `runtime`, or a model whose input batch dimension is not 1.
    """

    def __init__(self, model_content: bytes, runtime: str = "litert", arena_size: int = 1 << 20,
                 num_threads: int = 1):
        if runtime not in RUNTIMES:
            raise ValueError(f"Argument `runtime` must be one of {RUNTIMES}. Received: runtime={runtime!r}")
        self.runtime = runtime
        if runtime == "litert":
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            # Built-in reference kernels, no XNNPACK delegate: the same kernels TFLM mirrors, and variable tensors
            # that reset_all_variables() can reach.
            self._interpreter = Interpreter(
                model_content=bytes(model_content), num_threads=num_threads,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self._interpreter.allocate_tensors()
            self.input_details = self._interpreter.get_input_details()[0]
            self.output_details = self._interpreter.get_output_details()[0]
        else:
            from tflite_micro import runtime as tflm

            self._interpreter = tflm.Interpreter.from_bytes(bytes(model_content), arena_size=int(arena_size))
            self.input_details = self._interpreter.get_input_details(0)
            self.output_details = self._interpreter.get_output_details(0)
        shape = tuple(int(n) for n in self.input_details["shape"])
        if not shape or shape[0] != 1:
            raise ValueError(f"The model's input shape is {shape}; keras_expander runs batch-1 models only.")
        self.input_shape = shape
        self.input_dtype = np.dtype(self.input_details["dtype"])
        self._input_quantization = _scale_zero_point(self.input_details)
        self._output_quantization = _scale_zero_point(self.output_details)

    def predict_raw(self, sequence: np.ndarray) -> np.ndarray:
        """Runs one sequence from a reset state and returns the raw output tensor (int8 for int8 models).

        Args:
            sequence: Array of the model's input shape without the batch dimension, e.g. (T, F); float inputs are
                quantized for int8 models, and cast to the input type of unquantized integer inputs (token ids).

        Returns:
            The output tensor of shape (1, classes), in the output dtype.
        """
        x = np.asarray(sequence).reshape(self.input_shape)
        if self._input_quantization is not None and x.dtype != self.input_dtype:
            x = quantize(x, *self._input_quantization, self.input_dtype)
        x = x.astype(self.input_dtype)
        if self.runtime == "litert":
            self._interpreter.reset_all_variables()
            self._interpreter.set_tensor(self.input_details["index"], x)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self.output_details["index"]).copy()
        self._interpreter.reset()
        self._interpreter.set_input(x, 0)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_output(0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a batch of independent sequences, dequantized to float32.

        Args:
            x: Array of shape (N, T, F) (or (N,) + the model's per-sample input shape), float32 for every model.

        Returns:
            float32 array of shape (N, classes).
        """
        outputs = []
        for sequence in np.asarray(x):
            raw = self.predict_raw(sequence)
            if self._output_quantization is not None and raw.dtype != np.float32:
                raw = dequantize(raw, *self._output_quantization)
            outputs.append(np.asarray(raw, np.float32).reshape(-1))
        return np.stack(outputs)

    @property
    def input_quantization(self) -> tuple[float, int] | None:
        """(scale, zero point) of the input tensor, or None for float inputs."""
        return self._input_quantization

    @property
    def output_quantization(self) -> tuple[float, int] | None:
        """(scale, zero point) of the output tensor, or None for float outputs."""
        return self._output_quantization

    @property
    def output_scale(self) -> float | None:
        """Output quantization step (dequantized units per integer step), or None for float outputs."""
        return self._output_quantization[0] if self._output_quantization else None


def tflm_arena_works(tflite_path: str | os.PathLike, arena_size: int) -> bool:
    """Whether TFLite Micro loads the model and runs one invoke (zero input) with an arena of `arena_size` bytes,
    tried in a subprocess (TFLM aborts the process when the arena is too small)."""
    from keras_expander.files import die_with_parent

    result = subprocess.run([sys.executable, "-m", "keras_expander.runtime", str(tflite_path), str(int(arena_size))],
                            capture_output=True, timeout=300, preexec_fn=die_with_parent)
    return result.returncode == 0


def working_tflm_arena(model_content: bytes, start: int = 1 << 20, work_dir: str | None = None) -> int:
    """An arena size (bytes) that runs the model under TFLite Micro: `start`, doubled until a probe works
    (`doubled_tflm_arena` on a temporary copy of the flatbuffer).

    For the reference interpreter of checks that compare against TFLM, where the tight arena (the export's binary
    search) is not needed: one probe for most models.

    Args:
        model_content: The flatbuffer.
        start: First size tried, bytes.
        work_dir: Folder for the probe's temporary file (default: the system's).

    Returns:
        The arena size in bytes, `start` x a power of 2, at most `MAX_TFLM_ARENA`.

    Raises:
        RuntimeError: no arena up to `MAX_TFLM_ARENA` works: an op or tensor type TFLM lacks, or a model too large.
    """
    with tempfile.TemporaryDirectory(prefix="keras_expander_arena_", dir=work_dir) as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as stream:
            stream.write(model_content)
        return doubled_tflm_arena(path, start)


def doubled_tflm_arena(tflite_path: str | os.PathLike, start: int) -> int:
    """`start` bytes, doubled until TFLite Micro runs the `.tflite` at `tflite_path` (`tflm_arena_works`).

    Returns:
        The arena size in bytes, `start` x a power of 2, at most `MAX_TFLM_ARENA`.

    Raises:
        RuntimeError: no arena up to `MAX_TFLM_ARENA` works: an op or tensor type TFLM lacks, or a model too large.
    """
    size = int(start)
    while not tflm_arena_works(tflite_path, size):
        size *= 2
        if size > MAX_TFLM_ARENA:
            raise RuntimeError(f"The model does not run under TFLite Micro with any arena up to {MAX_TFLM_ARENA:,} "
                               f"bytes: an op or tensor type TFLM lacks, or a model too large for a microcontroller.")
    return size


def _probe(tflite_path: str, arena_size: int) -> None:
    with open(tflite_path, "rb") as stream:
        model = TFLiteModel(stream.read(), runtime="tflm", arena_size=arena_size)
    model.predict_raw(np.zeros(model.input_shape[1:], dtype=model.input_dtype))


if __name__ == "__main__":
    _probe(sys.argv[1], int(sys.argv[2]))
