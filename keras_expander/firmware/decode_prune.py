"""DECODE pruning: the `.tflite` -> `.tflite` rewrite to TFLM's DECODE operator with its pruning format.

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
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_expander.firmware.model_edit import CompressionError, align, tflm_compression

DECODE_METADATA_BYTES = 16
_TENSOR_TABLE_BYTES = 100  # flatbuffer tables of one more tensor (name, shape, buffer entry), approximate


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
        return tflm_compression()[1].DecodeType.PRUNING

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
        compressor, decode, _, _, schema = tflm_compression()
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


def decode_prune(model_content: bytes) -> tuple[bytes, list[EncodedTensor]]:
    """Encodes every constant int8 weight tensor whose DECODE pruning encoding is smaller than its dense data.

    Args:
        model_content: A `.tflite` flatbuffer (full int8).

    Returns:
        (the encoded flatbuffer, the tensors encoded). A DECODE op is inserted before each op that reads one.

    Raises:
        CompressionError: no tensor gets smaller (a dense or nearly dense model), or the model cannot be encoded.
    """
    compressor, _, decode_insert, model_editor, schema = tflm_compression()
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
    return align(bytes(model.build())), chosen
