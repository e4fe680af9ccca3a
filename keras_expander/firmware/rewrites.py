"""`.tflite` -> `.tflite` rewrites for TFLite Micro, by encoding: the one entry point of the firmware step.

- "plain": the model as exported (stock TFLM kernels);
- "tflm_prune": TFLM's DECODE pruning compression (`decode_prune`);
- "ke_fused": every unrolled int8 SimpleRNN / GRU layer becomes one fused op (`fused_rnn`);
- "ke_sparse": the fused ops with sparse weights, and pruned LSTM / FULLY_CONNECTED ops on our sparse kernels
  (`fused_rnn`, `sparse_rewrite`).
Our custom ops are listed in `keras_expander.firmware.ops`.
"""

from __future__ import annotations

import dataclasses

from keras_expander.firmware import fused_rnn
from keras_expander.firmware.model_edit import CompressionError, tflm_compression
from keras_expander.firmware.sparse_rewrite import sparse_rewrite

ENCODINGS = ("plain", "tflm_prune", "ke_sparse", "ke_fused")
# kernel_rewrite's answer for an LSTM(unroll=True): its steps look like FULLY_CONNECTED ops that do not pay.
UNROLLED_LSTM = ("Nothing to rewrite for encoding {encoding!r} (--compression {encoding}): the model's LSTM is "
                 "unrolled (LSTM(unroll=True)), so it converted to per-step FULLY_CONNECTED, SPLIT and elementwise "
                 "ops instead of the fused UNIDIRECTIONAL_SEQUENCE_LSTM op that our sparse LSTM kernel replaces, and "
                 "our fused ops cover SimpleRNN and GRU only. Export the model with LSTM(unroll=False) (the default; "
                 "the weights are the same: rebuild it so and copy them with set_weights), or deploy the exported "
                 "model as it is (--compression plain, or tflm_prune).")


@dataclasses.dataclass(frozen=True)
class KernelRewrite:
    """A model rewritten for keras_expander's kernels.

    Attributes:
        content: The rewritten flatbuffer.
        fused_layers: Unrolled SimpleRNN / GRU layers replaced by one fused op each (`fused_rnn.FusedLayer`).
        sparse_ops: LSTM / FULLY_CONNECTED ops rewritten to the sparse kernels (`SparseOp`).
        notes: Recurrent layers left unrolled, with the reason.
    """

    content: bytes
    fused_layers: list
    sparse_ops: list
    notes: list


def kernel_rewrite(model_content: bytes, encoding: str) -> KernelRewrite:
    """Rewrites a full-int8 model for keras_expander's kernels.

    Args:
        model_content: A full-int8 `.tflite` flatbuffer from `keras-expander export`.
        encoding: "ke_fused": every unrolled SimpleRNN / GRU layer becomes one fused op with dense weights
            (KE_SIMPLE_RNN_V1, KE_GRU_V1); "ke_sparse": the fused ops take sparse weights where those are smaller
            (KE_SPARSE_SIMPLE_RNN_V1, KE_SPARSE_GRU_V1), and pruned LSTM / FULLY_CONNECTED ops become
            KE_SPARSE_LSTM_V1 / KE_SPARSE_FC_V1 (`sparse_rewrite`).

    Returns:
        A `KernelRewrite`.

    Raises:
        ValueError: `encoding` is neither "ke_fused" nor "ke_sparse".
        CompressionError: nothing to rewrite (no unrolled recurrent layer for "ke_fused"; for "ke_sparse" neither
            such a layer nor a pruned LSTM / FULLY_CONNECTED), or a float model; the message says why, and names an
            unrolled LSTM (no fused op to rewrite) with what to do.
    """
    if encoding not in ("ke_fused", "ke_sparse"):
        raise ValueError(f"Argument `encoding` must be 'ke_fused' or 'ke_sparse'. Received: encoding={encoding!r}")
    content, fused, notes = fused_rnn.fuse_recurrent_layers(model_content,
                                                            "dense" if encoding == "ke_fused" else "smaller")
    sparse_ops = []
    if encoding == "ke_sparse":
        try:
            content, sparse_ops = sparse_rewrite(content)
        except CompressionError as error:
            if not fused and has_unrolled_lstm(model_content):
                raise CompressionError(UNROLLED_LSTM.format(encoding=encoding)) from error
            if not fused:
                raise
    elif not fused:
        if has_unrolled_lstm(model_content):
            raise CompressionError(UNROLLED_LSTM.format(encoding=encoding))
        raise CompressionError("The model has no unrolled int8 SimpleRNN or GRU layer to fuse"
                               + (f" ({'; '.join(notes)})" if notes else "") + "; export it with keras-expander "
                               "export --mode int8.")
    return KernelRewrite(content=content, fused_layers=fused, sparse_ops=sparse_ops, notes=notes)


def has_unrolled_lstm(model_content: bytes) -> bool:
    """True when a flatbuffer holds the time steps of an unrolled LSTM: a SPLIT into four gate tensors (GRU's has
    three) and no UNIDIRECTIONAL_SEQUENCE_LSTM op."""
    _, _, _, model_editor, schema = tflm_compression()
    model = model_editor.read(bytes(model_content))
    operators = [op for subgraph in model.subgraphs for op in subgraph.operators]
    return (not any(op.opcode == schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM for op in operators)
            and any(op.opcode == schema.BuiltinOperator.SPLIT and len(op.outputs) == 4 for op in operators))
