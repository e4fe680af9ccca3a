"""What every `.tflite` -> `.tflite` rewrite of ours shares: TFLM's Python modules that read, edit and align a
flatbuffer (pip `tflite-micro`: `compression.model_editor`, `decode_insert`, the `Compressor` protocol, the buffer
aligner), and the error a rewrite raises when a model cannot be encoded as asked.
"""

from __future__ import annotations

import os
import tempfile


class CompressionError(ValueError):
    """A model cannot be encoded as asked (e.g. no weight tensor gets smaller); the message says why."""


def tflm_compression():
    """TFLM's (compressor, decode, decode_insert, model_editor, schema) modules, imported on first use."""
    from tflite_micro.tensorflow.lite.micro.compression import compressor, decode, decode_insert, model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return compressor, decode, decode_insert, model_editor, schema


def align(model_content: bytes) -> bytes:
    """The flatbuffer with its buffers aligned as the schema asks.

    The Python flatbuffers builder ignores the schema's force_align on buffers; TFLM's C++ aligner restores
    it.
    """
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory(prefix="keras_expander_align_") as folder:
        source, target = os.path.join(folder, "in.tflite"), os.path.join(folder, "out.tflite")
        with open(source, "wb") as stream:
            stream.write(model_content)
        tflite_flatbuffer_align_wrapper.align_tflite_model(source, target)
        with open(target, "rb") as stream:
            return stream.read()
