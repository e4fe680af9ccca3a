"""What an export returns: `ExportReport` (one verified mode) and `ExportError` (a failed conversion or
verification step), shared by `keras_expander.tflite.export` and `keras_expander.tflite.backend_export`."""

from __future__ import annotations

import dataclasses


class ExportError(RuntimeError):
    """A conversion or verification step failed; the message names the model and the mode."""


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """Verified export of one model in one mode.

    Attributes:
        model: Model name.
        mode: "float32", "int8" or "dynamic_range".
        target: "tflm" or "litert".
        tflite_path: Where the flatbuffer was written.
        ops: Builtin operators in the flatbuffer, sorted.
        flatbuffer_bytes: Size of the `.tflite` (what goes into flash), bytes.
        gzip_bytes: Size after gzip -9 (storage / over-the-air), bytes.
        nonzero_weights: Non-zero entries over all weight tensors of the Keras model.
        total_weights: All entries of those tensors.
        arena_bytes: Smallest TFLM tensor arena that runs the model (binary search), bytes; None for litert.
        tflm_ms_per_sequence: Mean TFLM invoke time per sequence on this host, milliseconds; None for litert.
        samples: Test sequences verified.
        decision: How outputs become predicted labels (`keras_expander.predictions.OutputReading`), e.g. "argmax
            of 10 outputs" or "sigmoid output > 0.5".
        keras_accuracy, litert_accuracy, tflm_accuracy: Accuracy in [0, 1] on those sequences.
        argmax_agreement_litert_keras, argmax_agreement_tflm_keras, argmax_agreement_tflm_litert: Fraction of
            equal predicted labels, by `decision` (TFLM ones None for litert; the names keep the reports' format).
        max_abs_diff_litert_keras, max_abs_diff_tflm_keras, max_abs_diff_tflm_litert: Max |output difference|
            (logit units).
        max_abs_keras_output: Max |Keras output|, the scale of the float tolerance (logit units).
        output_scale: Output quantization step for int8 models, else None.
        notes: Conversions applied (e.g. SimpleRNN unrolled for int8).
        flash_kib, ram_kib: The target budget checked.
        fits: Model only: True when flatbuffer_bytes <= flash and arena_bytes <= RAM. The TFLM runtime, the C
            library and the stack are not counted; `keras-expander firmware` measures the whole image.
        reference_backend: For a Keras 3 model exported from the JAX or PyTorch backend (through a TensorFlow-backend
            process, `keras_expander.tflite.backend_export`), that backend; else None.
        max_abs_diff_keras_reference: Then the max |difference| between the model's outputs on that backend and on
            TensorFlow's (logit units); else None.
    """

    model: str
    mode: str
    target: str
    tflite_path: str
    ops: list
    flatbuffer_bytes: int
    gzip_bytes: int
    nonzero_weights: int
    total_weights: int
    arena_bytes: int | None
    tflm_ms_per_sequence: float | None
    samples: int
    decision: str
    keras_accuracy: float
    litert_accuracy: float
    tflm_accuracy: float | None
    argmax_agreement_litert_keras: float
    argmax_agreement_tflm_keras: float | None
    argmax_agreement_tflm_litert: float | None
    max_abs_diff_litert_keras: float
    max_abs_diff_tflm_keras: float | None
    max_abs_diff_tflm_litert: float | None
    max_abs_keras_output: float
    output_scale: float | None
    notes: list
    flash_kib: float
    ram_kib: float
    fits: bool
    reference_backend: str | None = None
    max_abs_diff_keras_reference: float | None = None
