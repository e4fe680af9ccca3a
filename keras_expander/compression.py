"""`.tflite` -> `.tflite` weight encodings for TFLite Micro: DECODE pruning compression, and the rewrite of a model
to keras_expander's kernels (fused SimpleRNN / GRU ops, sparse LSTM / FULLY_CONNECTED ops).

`kernel_rewrite(content, "ke_fused" | "ke_sparse")` is the entry point for the kernels; `keras_expander.fused_rnn`
documents the fused recurrent ops.

DECODE pruning (`decode_prune`)

TFLM's DECODE operator (custom op `TFLM_DECODE`) expands compressed constant tensors into the arena right before
the op that reads them. Its pruning format (`tensorflow/lite/micro/kernels/decode_state_prune.cc`) stores, per
tensor: a bitmask of ceil(n / 8) bytes, most significant bit first, 1 = value present; and an ancillary tensor
holding the 16-byte DECODE common metadata (byte 0: decode type 2 = pruning; byte 1: metadata version 1; byte 4:
pruning format version 1) followed by the present values in C order. Absent elements take the tensor's zero
point (per channel on axis 0 or on the last axis). Byte cost of an n-element int8 tensor with k non-zeros:
ceil(n / 8) + 16 + k, plus about 100 bytes of flatbuffer tables for the extra tensor, against n dense.

TFLM's Python tooling (pip `tflite-micro`: `compression.model_editor`, `decode_insert`, the `Compressor` protocol)
does the model surgery; its own pruning compressor is a stub, so `PruningCompressor` here implements the protocol.
The trade-off on the device: flash falls by the dense weight bytes minus the encoding, but every Invoke expands the
weights of the op being run into the arena, so RAM grows by about that op's dense weight bytes.

Sparse kernels (`sparse_rewrite`)
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
import os
import struct
import tempfile

import numpy as np

ENCODINGS = ("plain", "tflm_prune", "ke_sparse", "ke_fused")
DECODE_METADATA_BYTES = 16
_TENSOR_TABLE_BYTES = 100  # flatbuffer tables of one more tensor (name, shape, buffer entry), approximate


class CompressionError(ValueError):
    """A model cannot be encoded as asked (e.g. no weight tensor gets smaller); the message says why."""


def _tflm_compression():
    from tflite_micro.tensorflow.lite.micro.compression import compressor, decode, decode_insert, model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return compressor, decode, decode_insert, model_editor, schema


def element_zero_points(tensor) -> np.ndarray:
    """Per-element zero points of a quantized tensor, resolved as TFLM's DECODE pruning state does.

    Args:
        tensor: A `model_editor.Tensor` with n elements.

    Returns:
        int64 array of shape (n,): the value an absent element decodes to.

    Raises:
        CompressionError: per-channel quantization on an axis DECODE does not support (only 0 or the last).
    """
    size = int(np.prod(tensor.shape))
    quantization = tensor.quantization
    if quantization is None:
        return np.zeros(size, np.int64)
    scales = np.atleast_1d(quantization.scales)
    zero_points = np.broadcast_to(np.atleast_1d(np.asarray(quantization.zero_points, np.int64)), (len(scales),))
    axis, rank = quantization.axis or 0, len(tensor.shape)
    if len(scales) > 1 and axis == rank - 1:
        return np.resize(zero_points, size)  # element i belongs to channel i % C
    if axis != 0:
        raise CompressionError(f"Tensor {tensor.name!r} is quantized per channel on axis {axis}; TFLM's DECODE "
                               f"pruning supports axis 0 or the last axis only.")
    return np.repeat(zero_points, size // len(scales))


class PruningCompressor:
    """TFLM's `compressor.Compressor` protocol for the DECODE pruning format (see the module docstring).

    `compress(tensor, method)` returns a `compressor.CompressionResult` whose `encoded_data` is the bitmask and
    whose `ancillary_data` is the metadata followed by the present values.
    """

    @property
    def decode_type(self):
        """`decode.DecodeType.PRUNING`."""
        return _tflm_compression()[1].DecodeType.PRUNING

    def compress(self, tensor, method=None):
        """Encodes one constant tensor.

        Args:
            tensor: `model_editor.Tensor` with data (int8 weights; other types need all zero points 0).
            method: The spec's compression method (unused: pruning has no parameters).

        Returns:
            `compressor.CompressionResult`.

        Raises:
            compressor.CompressionError: a tensor without data, or non-int8 with non-zero zero points.
        """
        compressor, decode, _, _, schema = _tflm_compression()
        if tensor.buffer is None or not tensor.buffer.data:
            raise compressor.CompressionError(f"Tensor {tensor.name!r} has no constant data to compress.")
        values = tensor.array.reshape(-1)
        zero_points = element_zero_points(tensor)
        if tensor.dtype != schema.TensorType.INT8 and np.any(zero_points != 0):
            raise compressor.CompressionError(f"Tensor {tensor.name!r}: DECODE pruning needs zero points of 0 for "
                                              f"types other than int8.")
        present = values.astype(np.int64) != zero_points
        metadata = decode.DecodeCommonMetadata(decode_type=self.decode_type, user_data=bytes([1]))  # format v1
        return compressor.CompressionResult(encoded_data=np.packbits(present, bitorder="big").tobytes(),
                                            ancillary_data=metadata.to_bytes() + values[present].tobytes())


def encoded_bytes(tensor) -> int:
    """Bytes of a tensor in the DECODE pruning format: bitmask + metadata + present values + tensor tables."""
    values = tensor.array.reshape(-1)
    present = int(np.count_nonzero(values.astype(np.int64) != element_zero_points(tensor)))
    return -(-values.size // 8) + DECODE_METADATA_BYTES + present * values.itemsize + _TENSOR_TABLE_BYTES


@dataclasses.dataclass(frozen=True)
class EncodedTensor:
    """One tensor chosen for DECODE pruning.

    Attributes:
        name: Tensor name.
        shape: Its shape.
        dense_bytes: Bytes of its data in the plain model.
        encoded_bytes: Bitmask + ancillary bytes (flatbuffer tables not counted).
        sparsity: Fraction of elements equal to the zero point, in [0, 1].
    """

    name: str
    shape: tuple
    dense_bytes: int
    encoded_bytes: int
    sparsity: float


def _align(model_content: bytes) -> bytes:
    # The Python flatbuffers builder ignores the schema's force_align on buffers; TFLM's C++ aligner restores it.
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory(prefix="keras_expander_align_") as folder:
        source, target = os.path.join(folder, "in.tflite"), os.path.join(folder, "out.tflite")
        with open(source, "wb") as stream:
            stream.write(model_content)
        tflite_flatbuffer_align_wrapper.align_tflite_model(source, target)
        with open(target, "rb") as stream:
            return stream.read()


def decode_prune(model_content: bytes) -> tuple[bytes, list[EncodedTensor]]:
    """Encodes every constant int8 weight tensor whose DECODE pruning encoding is smaller than its dense data.

    Args:
        model_content: A `.tflite` flatbuffer (full int8).

    Returns:
        (the encoded flatbuffer, the tensors encoded). A DECODE op is inserted before each op that reads one.

    Raises:
        CompressionError: no tensor gets smaller (a dense or nearly dense model), or the model cannot be encoded.
    """
    compressor, _, decode_insert, model_editor, schema = _tflm_compression()
    model = model_editor.read(bytes(model_content))
    chosen, results = [], {}
    encoder = PruningCompressor()
    for subgraph_index, subgraph in enumerate(model.subgraphs):
        for tensor_index, tensor in enumerate(subgraph.tensors):
            if (tensor.dtype != schema.TensorType.INT8 or tensor.is_variable or tensor.buffer is None
                    or not tensor.buffer.data or not subgraph.consumers_of(tensor)):
                continue
            size = encoded_bytes(tensor)
            if size >= len(tensor.buffer.data):
                continue
            try:
                result = encoder.compress(tensor)
            except compressor.CompressionError as error:
                raise CompressionError(str(error)) from error
            results[(subgraph_index, tensor_index)] = result
            values = tensor.array.reshape(-1)
            chosen.append(EncodedTensor(
                name=tensor.name, shape=tuple(int(n) for n in tensor.shape), dense_bytes=len(tensor.buffer.data),
                encoded_bytes=len(result.encoded_data) + len(result.ancillary_data),
                sparsity=float(np.mean(values.astype(np.int64) == element_zero_points(tensor)))))
    if not chosen:
        raise CompressionError("No int8 weight tensor of the model gets smaller in TFLM's DECODE pruning format "
                               "(a bitmask of n/8 bytes plus the non-zero values); it pays from about 10 % "
                               "sparsity on large tensors. Export the plain model instead.")
    decode_insert.insert_decode_operators(model, results)
    return _align(bytes(model.build())), chosen


SPARSE_LSTM_OP = "KE_SPARSE_LSTM_V1"
SPARSE_FULLY_CONNECTED_OP = "KE_SPARSE_FC_V1"
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
    _, _, _, model_editor, schema = _tflm_compression()
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
                               f"model, or pass force=True to run the sparse kernels anyway.")
    model_editor.prune_buffers(model)
    return _align(bytes(model.build())), rewritten


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
            such a layer nor a pruned LSTM / FULLY_CONNECTED), or a float model; the message says why.
    """
    from keras_expander import fused_rnn

    if encoding not in ("ke_fused", "ke_sparse"):
        raise ValueError(f"Argument `encoding` must be 'ke_fused' or 'ke_sparse'. Received: encoding={encoding!r}")
    content, fused, notes = fused_rnn.fuse_recurrent_layers(model_content,
                                                            "dense" if encoding == "ke_fused" else "smaller")
    sparse_ops = []
    if encoding == "ke_sparse":
        try:
            content, sparse_ops = sparse_rewrite(content)
        except CompressionError:
            if not fused:
                raise
    elif not fused:
        raise CompressionError("The model has no unrolled int8 SimpleRNN or GRU layer to fuse"
                               + (f" ({'; '.join(notes)})" if notes else "") + "; export it with keras-expander "
                               "export --mode int8.")
    return KernelRewrite(content=content, fused_layers=fused, sparse_ops=sparse_ops, notes=notes)
