"""Fused SimpleRNN / GRU ops (KE_SIMPLE_RNN_V1, KE_GRU_V1, KE_SPARSE_SIMPLE_RNN_V1, KE_SPARSE_GRU_V1).

What is compared: the model rewritten by `kernel_rewrite` and the plain model it came from (the
export's unrolled int8 graph) are each built into firmware against the same TFLM tree; the fused build runs our
kernels for the recurrent layers, the plain build TFLM's stock kernels (reference kernels); every output byte of
every test sequence must be equal (sequences from reset state). On the host and on Cortex-M4 under QEMU, whose
Thumb-2/DSP paths (SMMULR, SXTB16) differ from the host's C++.
"""

import functools

import numpy as np
import pytest
from test_firmware import require_toolchain

from keras_expander.firmware import deploy, fused_rnn
from keras_expander.firmware.model_edit import CompressionError, align
from keras_expander.firmware.rewrites import kernel_rewrite
from keras_expander.frameworks import tf_keras
from keras_expander.tflite import export

STEPS, FEATURES = 7, 5


def random_weights(model, seed, sparsity=(), empty=()):
    """Seeded N(0, 0.25) weights; `sparsity` maps layer names to the share of their kernel and recurrent kernel
    entries set to zero; layers in `empty` also get an input that feeds nothing (row 1) and a unit of the first
    gate that reads nothing (column 2)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for weight in layer.weights:
            values = rng.normal(size=weight.shape).astype("float32") * 0.5
            if "kernel" in weight.name and layer.name in dict(sparsity):
                values[rng.random(values.shape) < dict(sparsity)[layer.name]] = 0.0
                if layer.name in empty:
                    values[1, :] = 0.0
                    values[:, 2] = 0.0
            weight.assign(values)


def sequences(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, STEPS, FEATURES)).astype("float32")


@functools.lru_cache(maxsize=None)
def plain_model(name):
    """The full-int8 export of a test model (converted once per session: about 10 s each).

    "mixed": an LSTM (stock op, with int8 intermediates) feeding a Bidirectional GRU returning sequences (95 %
    sparse, an empty input row and an empty unit column: sparse ops; at 99 % this small GRU's recurrent matrix
    would be empty, the converter folds it away and the layer stays unrolled with a note), a SimpleRNN with a RELU
    activation going backwards (dense: dense op; the converter fuses RELU into its step-0 FULLY_CONNECTED), and
    RNN(GRUCell) (50 %) returning the last state; odd sizes throughout.
    "device": a GRU returning sequences and a SimpleRNN, both 90 % sparse, for Cortex-M4.
    """
    layers = tf_keras.layers
    inputs = tf_keras.Input((STEPS, FEATURES))
    if name == "mixed":
        hidden = layers.LSTM(6, return_sequences=True, name="lstm")(inputs)
        hidden = layers.Bidirectional(layers.GRU(7, return_sequences=True), name="bigru")(hidden)
        hidden = layers.SimpleRNN(5, activation="relu", go_backwards=True, return_sequences=True,
                                  name="simplernn")(hidden)
        hidden = layers.RNN(layers.GRUCell(9), name="cellgru")(hidden)
        sparsity, empty = {"bigru": 0.95, "cellgru": 0.5}, ("bigru",)
    else:
        hidden = layers.GRU(24, return_sequences=True, name="gru")(inputs)
        hidden = layers.SimpleRNN(16, name="simplernn")(hidden)
        sparsity, empty = {"gru": 0.9, "simplernn": 0.9}, ()
    model = tf_keras.Model(inputs, layers.Dense(3, name="head")(hidden))
    random_weights(model, seed=3, sparsity=sparsity, empty=empty)
    return export.convert(model, "int8", sequences(64, seed=9))[0]


def outputs(report):
    return np.fromfile(f"{report.project_dir}/run/outputs.bin", np.int8).reshape(report.samples, -1)


def both_builds(plain, encoding, tmp_path, target, n=12):
    rewrite = kernel_rewrite(plain, encoding)
    x = sequences(n, seed=1)
    stock = deploy.deploy(plain, x, target=target, out_dir=tmp_path / "stock")
    ours = deploy.deploy(rewrite.content, x, target=target, out_dir=tmp_path / "fused", reference_content=plain)
    return stock, ours, rewrite


def test_fused_layers_equal_the_unrolled_graph_on_the_host(tmp_path):
    require_toolchain("host")
    stock, ours, rewrite = both_builds(plain_model("mixed"), "ke_sparse", tmp_path, "host")
    ops = [layer.op for layer in rewrite.fused_layers]
    # Both directions of the Bidirectional GRU, the SimpleRNN and the RNN(GRUCell); the LSTM stays the stock op.
    assert sorted(ops) == ["KE_GRU_V1", "KE_SIMPLE_RNN_V1", "KE_SPARSE_GRU_V1", "KE_SPARSE_GRU_V1"]
    assert [layer.sequence_output for layer in rewrite.fused_layers].count(True) == 3 and not rewrite.notes
    assert not {"UNPACK", "PACK", "TANH", "LOGISTIC", "SPLIT_V"} & set(ours.ops)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ours.ops
    np.testing.assert_array_equal(outputs(ours), outputs(stock))
    assert ours.arena_bytes < stock.arena_bytes


def test_fused_layers_equal_the_unrolled_graph_on_cortex_m4(tmp_path):
    require_toolchain("cortex-m4")
    plain = plain_model("device")
    stock, ours, rewrite = both_builds(plain, "ke_sparse", tmp_path, "cortex-m4", n=6)
    assert [layer.op for layer in rewrite.fused_layers] == ["KE_SPARSE_GRU_V1", "KE_SPARSE_SIMPLE_RNN_V1"]
    np.testing.assert_array_equal(outputs(ours), outputs(stock))
    assert ours.model_flash_bytes < stock.model_flash_bytes / 2 and ours.arena_bytes < stock.arena_bytes / 4
    assert ours.instructions_per_inference < stock.instructions_per_inference / 2
    # The dense ops of both cells, on the same model.
    dense = kernel_rewrite(plain, "ke_fused")
    assert [layer.op for layer in dense.fused_layers] == ["KE_GRU_V1", "KE_SIMPLE_RNN_V1"]
    fused = deploy.deploy(dense.content, sequences(6, seed=1), target="cortex-m4", out_dir=tmp_path / "dense",
                          reference_content=plain)
    np.testing.assert_array_equal(outputs(fused), outputs(stock))


def test_prepare_rejects_a_corrupt_program_naming_the_step(tmp_path):
    require_toolchain("host")
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    from keras_expander.firmware.toolchain import FirmwareError

    plain = plain_model("device")
    fused = kernel_rewrite(plain, "ke_fused").content
    model = model_editor.read(fused)
    op = next(op for op in model.subgraphs[0].operators if op.custom_code == "KE_GRU_V1")
    program = op.inputs[4].array.copy()
    head = 8 + 3  # header, first step's slots and count: the first instruction (FC_INPUT), then
    program[head + 6] = int(np.uint32(fused_rnn._ADD | 0x4F << 8 | 0x00 << 16 | 0x10 << 24).view(np.int32))
    op.inputs[4].buffer = model_editor.Buffer(data=program.tobytes())
    with pytest.raises(FirmwareError, match=r"KE_GRU_V1: step 0 instruction 1 \(opcode 3\)"):
        deploy.deploy(align(bytes(model.build())), sequences(1), target="host",
                      out_dir=tmp_path / "fw", reference_content=plain)


def test_layers_the_op_cannot_express_stay_unrolled_with_the_reason():
    layers = tf_keras.layers
    inputs = tf_keras.Input((2, FEATURES))
    model = tf_keras.Model(inputs, layers.Dense(3)(layers.GRU(4)(inputs)))
    random_weights(model, seed=1)
    plain = export.convert(model, "int8", sequences(16)[:, :2])[0]
    content, fused, notes = fused_rnn.fuse_recurrent_layers(plain)
    assert content == plain and not fused and "2 time steps (the fused op needs at least 3)" in notes[0]
    with pytest.raises(CompressionError, match="no unrolled int8 SimpleRNN or GRU layer to fuse.*2 time"):
        kernel_rewrite(plain, "ke_fused")
    with pytest.raises(ValueError, match="Argument `weights`"):
        fused_rnn.fuse_recurrent_layers(plain, weights="blobs")


def test_unrolled_lstm_is_told_why_there_is_no_op_to_rewrite_and_what_works():
    layers = tf_keras.layers
    inputs = tf_keras.Input((STEPS, FEATURES))
    model = tf_keras.Model(inputs, layers.Dense(3)(layers.LSTM(8, unroll=True, name="lstm")(inputs)))
    random_weights(model, seed=1, sparsity={"lstm": 0.9})  # each step pays alone; all 13 do not
    plain = export.convert(model, "int8", sequences(16))[0]
    for encoding in ("ke_sparse", "ke_fused"):
        with pytest.raises(CompressionError, match=rf"encoding '{encoding}' \(--compression {encoding}\): the "
                           r"model's LSTM is unrolled.*UNIDIRECTIONAL_SEQUENCE_LSTM.*unroll=False.*--compression "
                           r"plain") as error:
            kernel_rewrite(plain, encoding)
        assert "force=True" not in str(error.value)


def test_quantize_multiplier_matches_tflm_on_closed_forms():
    assert fused_rnn.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fused_rnn.quantize_multiplier(0.75) == (3 << 29, 0)
    assert fused_rnn.quantize_multiplier(3.0) == (3 << 29, 2)
    assert fused_rnn.quantize_multiplier(1 - 2.0 ** -33) == (1 << 30, 1)  # rounds up to 2^31: halved, shift + 1
    assert fused_rnn.quantize_multiplier(2.0 ** -40) == (0, 0)  # below 2^-32: flushed to zero
    assert fused_rnn.quantize_multiplier(0.0) == (0, 0)
    # x * 0.75 with a right shift of 1, rounded half away from zero: 5 * 0.375 = 1.875 -> 2; -5 -> -2.
    assert fused_rnn.multiply_by_quantized_multiplier(5, 3 << 29, -1) == 2
    assert fused_rnn.multiply_by_quantized_multiplier(-5, 3 << 29, -1) == -2
    assert fused_rnn.multiply_by_quantized_multiplier(4, 1 << 30, -3) == 0  # 0.25 rounds to 0


def test_fully_connected_multiplier_multiplies_the_scales_in_float_as_the_tree_does():
    # The input FULLY_CONNECTED of step 20 of the sequential-MNIST GRU(128) (runs/mcu_footprint/gru-0, 2026-12-03):
    # the trees' GetQuantizedConvolutionMultipler takes float(input scale * weight scale); the product in double
    # gives 1159760542, and for the accumulator -129882 the output -68 where the stock build computes -69.
    input_q = (np.float32(float.fromhex("0x1.0101020000000p-8")), -128)
    weight_scale = np.float32(float.fromhex("0x1.2257160000000p-8"))
    output_q = (np.float32(float.fromhex("0x1.0ddc280000000p-5")), 30)
    params = fused_rnn.tflm_fully_connected_params(input_q, weight_scale, output_q, activation=0)
    assert params == [128, 1159760561, -10, 30, -128, 127]
    assert fused_rnn.multiply_by_quantized_multiplier(-129882, params[1], params[2]) == -69


def test_tables_have_the_documented_encoding():
    identity = np.arange(-128, 128).astype(np.int8)
    # 255 steps of 1, one bit each, least significant first: the last byte holds 7 of them.
    assert fused_rnn._encode_table(identity) == bytes([0x01, 0x80]) + bytes([0xFF] * 31 + [0x7F])
    decreasing = np.repeat(np.arange(127, -129, -2), 2).astype(np.int8)  # steps 0, 2, 0, 2 ...: 2 bits
    encoded = fused_rnn._encode_table(decreasing)
    assert encoded[:2] == bytes([0x12, 127]) and len(encoded) == 2 + 64
    assert encoded[2] == 0b10001000  # steps 0, 2, 0, 2, least significant first
    bumpy = identity.copy()
    bumpy[10] = 100
    assert fused_rnn._encode_table(bumpy) == bytes([0]) + bumpy.tobytes()
