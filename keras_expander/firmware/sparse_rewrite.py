"""Sparse kernels: the `.tflite` -> `.tflite` rewrite of pruned int8 LSTM and FULLY_CONNECTED ops to ours.

Each pruned int8 UNIDIRECTIONAL_SEQUENCE_LSTM becomes custom op `KE_SPARSE_LSTM_V1` and each pruned int8
FULLY_CONNECTED `KE_SPARSE_FC_V1`, with the same inputs in the same positions, except that every weight matrix
(rows = output units, cols = input units, TFLite layout) is replaced by an int8 tensor of shape [blob bytes] with
the same quantization, holding (little-endian): uint16 rows, uint16 cols, uint8 index width W (1 if cols <= 255,
else 2), 3 zero bytes; `rows` row counts (W bytes each); the column index of every non-zero (W bytes each, ascending
within a row, row by row); the non-zero int8 values in the same order. Byte cost: 8 + W (rows + nnz) + nnz,
against rows x cols dense. The kernels (keras_expander/firmware/kernels) read it in place from flash. Options
(the stock op's builtin options) travel as a FlexBuffer map.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from keras_expander.firmware import ops
from keras_expander.firmware.model_edit import CompressionError, align, tflm_compression

SPARSE_LSTM_OP = ops.SPARSE_LSTM.name
SPARSE_FULLY_CONNECTED_OP = ops.SPARSE_FULLY_CONNECTED.name
_LSTM_WEIGHT_INPUTS = range(1, 9)  # input_to_{i,f,c,o} and recurrent_to_{i,f,c,o} weights


def sparse_blob(matrix: np.ndarray) -> bytes:
    """A weight matrix in the sparse kernels' row format (see the module docstring).

    Args:
        matrix: int8 array of shape (rows, cols), rows = output units; zero entries are pruned.

    Returns:
        The blob: 8 + W (rows + nnz) + nnz bytes, W = 1 if cols <= 255 else 2.

    Raises:
        CompressionError: not a 2-D int8 matrix, or a side longer than 65,535.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.dtype != np.int8:
        raise CompressionError(f"The sparse format takes 2-D int8 matrices. Received {matrix.dtype} of shape "
                               f"{matrix.shape}.")
    rows, cols = matrix.shape
    if max(rows, cols) > 0xFFFF:
        raise CompressionError(f"The sparse format holds at most 65,535 rows and columns. Received {matrix.shape}.")
    index_type = np.dtype("<u1") if cols <= 255 else np.dtype("<u2")
    row_index, col_index = np.nonzero(matrix)  # row-major: columns ascend within each row
    counts = np.count_nonzero(matrix, axis=1)
    return (struct.pack("<HHB3x", rows, cols, index_type.itemsize) + counts.astype(index_type).tobytes()
            + col_index.astype(index_type).tobytes() + matrix[row_index, col_index].tobytes())


@dataclasses.dataclass(frozen=True)
class SparseOp:
    """One op rewritten to a sparse kernel.

    Attributes:
        op: The custom op name (e.g. "KE_SPARSE_LSTM_V1").
        index: The operator's index in its subgraph.
        dense_bytes: Bytes of its weight matrices in the plain model.
        sparse_bytes: Bytes of their blobs.
        nonzero, total: Non-zero and all entries of those matrices.
    """

    op: str
    index: int
    dense_bytes: int
    sparse_bytes: int
    nonzero: int
    total: int


def _int8_weight(tensor, schema) -> bool:
    return (tensor is not None and tensor.dtype == schema.TensorType.INT8 and tensor.buffer is not None
            and bool(tensor.buffer.data) and len(tensor.shape) == 2)


def _flexbuffer_options(op, schema) -> bytes:
    from flatbuffers import flexbuffers

    options = op._fb.builtinOptions  # model_editor keeps the OperatorT, options included
    activation = int(getattr(options, "fusedActivationFunction", 0))
    if op.opcode == schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM:
        values = {"version": 1, "fused_activation_function": activation,
                  "cell_clip": float(options.cellClip), "proj_clip": float(options.projClip),
                  "time_major": bool(options.timeMajor),
                  "asymmetric_quantize_inputs": bool(options.asymmetricQuantizeInputs),
                  "diagonal_recurrent_tensors": bool(options.diagonalRecurrentTensors)}
    else:
        values = {"version": 1, "fused_activation_function": activation,
                  "keep_num_dims": bool(getattr(options, "keepNumDims", False)),
                  "asymmetric_quantize_inputs": bool(getattr(options, "asymmetricQuantizeInputs", False))}
    return bytes(flexbuffers.Dumps(values))


def sparse_rewrite(model_content: bytes, force: bool = False) -> tuple[bytes, list[SparseOp]]:
    """Rewrites every pruned int8 LSTM and FULLY_CONNECTED whose weights are smaller in the sparse format.

    An op is rewritten only when the blobs of all its weight matrices together are smaller than their dense bytes
    (unless `force`); others stay stock ops. Weights shared by several ops (an unrolled SimpleRNN) become one
    shared blob.

    Args:
        model_content: A full-int8 `.tflite` flatbuffer.
        force: Rewrite every mappable op, even where the blobs are not smaller (e.g. to run a 50 %-sparse model
            on the sparse kernels, or to test them at any sparsity).

    Returns:
        (the rewritten flatbuffer, the ops rewritten).

    Raises:
        CompressionError: a float or hybrid model (the sparse kernels are int8), weights with a non-zero zero point,
            or no op whose weights get smaller.
    """
    _, _, _, model_editor, schema = tflm_compression()
    model = model_editor.read(bytes(model_content))
    rewritten, blobs, chosen = [], {}, []
    mappable = (schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM, schema.BuiltinOperator.FULLY_CONNECTED)
    for subgraph in model.subgraphs:
        for index, op in enumerate(subgraph.operators):
            if op.opcode not in mappable:
                continue
            is_lstm = op.opcode == schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
            positions = [i for i in (_LSTM_WEIGHT_INPUTS if is_lstm else (1,))
                         if i < len(op.inputs) and op.inputs[i] is not None]
            if op.inputs[0].dtype != schema.TensorType.INT8 or not all(_int8_weight(op.inputs[i], schema)
                                                                        for i in positions):
                raise CompressionError(f"Operator {index} ({op.opcode_name}) is not full int8; the sparse kernels "
                                       f"run int8 models only: export with --mode int8.")
            weights = [op.inputs[i] for i in positions]
            for weight in weights:
                if np.any(np.atleast_1d(weight.quantization.zero_points if weight.quantization else 0) != 0):
                    raise CompressionError(f"Weight tensor {weight.name!r} has a non-zero zero point; the sparse "
                                           f"kernels take symmetric int8 weights (TFLite's int8 scheme).")
            for weight in weights:
                if id(weight) not in blobs:
                    blobs[id(weight)] = sparse_blob(weight.array)
            dense = sum(len(w.buffer.data) for w in weights)
            sparse = sum(len(blobs[id(w)]) for w in weights)
            if sparse < dense or force:
                name = SPARSE_LSTM_OP if is_lstm else SPARSE_FULLY_CONNECTED_OP
                chosen.append((subgraph, index, op, name, weights, dense, sparse))
    rewritten_ops = {id(entry[2]) for entry in chosen}
    encoded, dense_of = set(), {}
    for subgraph, index, op, name, weights, dense, sparse in chosen:
        if any(id(consumer) not in rewritten_ops for weight in weights for consumer in subgraph.consumers_of(weight)):
            continue  # a stock op also reads these weights: they must stay dense
        rewritten.append(SparseOp(op=name, index=index, dense_bytes=dense, sparse_bytes=sparse,
                                  nonzero=int(sum(np.count_nonzero(w.array) for w in weights)),
                                  total=int(sum(w.array.size for w in weights))))
        options = _flexbuffer_options(op, schema)
        op.opcode, op.custom_code = schema.BuiltinOperator.CUSTOM, name
        op._fb.builtinOptionsType, op._fb.builtinOptions = 0, None
        op._fb.customOptions, op._fb.customOptionsFormat = list(options), 0  # 0: FLEXBUFFERS
        for weight in weights:
            # In place, as decode_insert does: tensor indices (which ops' intermediates hold raw) stay valid,
            # and the consumers of shared weights (an unrolled SimpleRNN) share the blob.
            if id(weight) not in encoded:
                encoded.add(id(weight))
                dense_of[id(weight)] = len(weight.buffer.data)
                weight.shape = (len(blobs[id(weight)]),)
                weight.buffer = model_editor.Buffer(data=blobs[id(weight)])
    if not rewritten:
        raise CompressionError("No LSTM or FULLY_CONNECTED op of the model has weights that are smaller in the "
                               "sparse format (it pays above about 50 % sparsity); keep the plain model.")
    # Shared weights are saved once, but every rewritten op carries its own options: a small unrolled RNN can grow.
    saving = (sum(dense_of[key] - len(blobs[key]) for key in encoded)
              - sum(len(entry[2]._fb.customOptions) for entry in chosen if entry[2].custom_code is not None))
    if saving <= 0 and not force:
        raise CompressionError(f"Rewriting the model for the sparse kernels would not make it smaller (net "
                               f"{-saving} more bytes: {len(rewritten)} ops each carry their options); keep the plain "
                               f"model (--compression plain); from Python, sparse_rewrite(model_content, force=True) "
                               f"runs the sparse kernels anyway.")
    model_editor.prune_buffers(model)
    return align(bytes(model.build())), rewritten
