"""Firmware: generated projects built for the host and for Cortex-M4 (run under QEMU) give outputs identical, byte
for byte, to the pip TFLite Micro interpreter; DECODE pruning changes no output; measurements are consistent with
the image; missing tools, trees and ops fail with a message that says what to do.

These tests need g++, the Arm toolchain, QEMU and TFLM trees (../shared/tflm or $KERAS_EXPANDER_TFLM). Without
them they are skipped with the reason, unless KERAS_EXPANDER_REQUIRE_FIRMWARE=1 (CI), where they fail.
"""

import json
import os

import numpy as np
import pytest

from keras_expander.firmware import deploy, project
from keras_expander.firmware.decode_prune import decode_prune
from keras_expander.firmware.model_edit import CompressionError
from keras_expander.firmware.toolchain import FirmwareError, find_toolchain
from keras_expander.frameworks import tf_keras
from keras_expander.runtime import TFLiteModel
from keras_expander.tflite import export

STEPS, FEATURES = 28, 28  # sequential-MNIST shaped, so the CLI can run them on real test sequences


def require_toolchain(target, kernels="reference"):
    """The toolchain, or a skip naming what is missing (a failure where CI requires firmware tests)."""
    try:
        return find_toolchain(target, kernels)
    except FirmwareError as error:
        if os.environ.get("KERAS_EXPANDER_REQUIRE_FIRMWARE") == "1":
            pytest.fail(f"firmware tests are required here: {error}")
        pytest.skip(str(error))


def tiny_model(cell, units, sparsity, seed=1, steps=STEPS, features=FEATURES, classes=10,
               zero_row_and_column=False):
    """Input(steps, features) -> LSTM/SimpleRNN(units) -> Dense(classes), with a seeded random share `sparsity`
    of kernel and recurrent kernel set to zero; `zero_row_and_column` also zeroes input 1 and column 2."""
    tf_keras.utils.set_random_seed(seed)
    layer = {"lstm": tf_keras.layers.LSTM, "simple_rnn": tf_keras.layers.SimpleRNN}[cell]
    model = tf_keras.Sequential([tf_keras.Input((steps, features)), layer(units), tf_keras.layers.Dense(classes)])
    rng = np.random.default_rng(seed)
    for weight in (model.layers[0].cell.kernel, model.layers[0].cell.recurrent_kernel):
        values = weight.numpy()
        values[rng.random(values.shape) < sparsity] = 0.0
        if zero_row_and_column:
            values[1, :] = 0.0  # an input that feeds nothing
            values[:, 2] = 0.0  # a unit of the first gate that reads nothing
        weight.assign(values)
    return model


def sequences(n, seed=0):
    return np.random.default_rng(seed).random((n, STEPS, FEATURES)).astype("float32")


@pytest.fixture(scope="module")
def int8_models():
    """Full-int8 flatbuffers: LSTM(16) 80 % sparse (DECODE pays on its recurrent tensors), SimpleRNN(8) unrolled."""
    calibration = sequences(64, seed=5)
    return {cell: export.convert(tiny_model(cell, units, 0.8), "int8", calibration)[0]
            for cell, units in (("lstm", 16), ("simple_rnn", 8))}


def outputs_file(report):
    return np.fromfile(os.path.join(report.project_dir, "run", "outputs.bin"), np.int8).reshape(report.samples, -1)


def python_outputs(content, x):
    interpreter = TFLiteModel(content, runtime="tflm")
    return np.stack([interpreter.predict_raw(sequence).reshape(-1) for sequence in x])


# The unrolled SimpleRNN on Cortex-M4 is slow-marked (30 s each): the stock build of test_sparse_kernels'
# SimpleRNN test holds the property on reference kernels by default, and CMSIS-NN is checked on the LSTM.
@pytest.mark.parametrize("target,kernels,cell", [
    (target, kernels, cell) if (target, cell) != ("cortex-m4", "simple_rnn")
    else pytest.param(target, kernels, cell, marks=pytest.mark.slow)
    for target, kernels in (("host", "reference"), ("cortex-m4", "reference"), ("cortex-m4", "cmsis_nn"))
    for cell in ("lstm", "simple_rnn")])
def test_firmware_outputs_equal_tflm_python_bit_for_bit(int8_models, cell, target, kernels, tmp_path):
    require_toolchain(target, kernels)
    x = sequences(24)
    content = int8_models[cell]
    report = deploy.deploy(content, x, target=target, kernels=kernels, out_dir=tmp_path / "fw")
    assert report.bitexact_vs_tflm_python and report.mismatched_sequences == 0 and report.samples == len(x)
    # Independently of deploy's own comparison: the firmware's output file against the interpreter.
    np.testing.assert_array_equal(outputs_file(report), python_outputs(content, x))


def test_cortex_m4_measurements_are_consistent_with_the_image(int8_models, tmp_path):
    require_toolchain("cortex-m4")
    content = int8_models["lstm"]
    report = deploy.deploy(content, sequences(6), target="cortex-m4", out_dir=tmp_path / "fw")
    assert report.model_flash_bytes == len(content)  # the model array is exactly the flatbuffer
    parts = (report.model_flash_bytes + report.runtime_flash_bytes + report.library_flash_bytes
             + report.harness_flash_bytes)
    # Parts never exceed the image; the rest is alignment fill and the startup copy table.
    assert 0 <= report.image_flash_bytes - parts <= 256
    assert report.ram_bytes == report.data_bytes + report.bss_bytes + report.stack_bytes
    assert report.bss_bytes >= report.arena_bytes > 0 and 0 < report.stack_bytes < 64 * 1024
    # 28 steps x (16 x 28 + 16 x 16) x 4 gates = 78,848 multiply-accumulates; reference kernels need several
    # instructions each.
    assert 78_848 * 2 < report.instructions_per_inference < 78_848 * 40
    assert report.fits and report.board == deploy.DEFAULT_BOARD
    # Cycles (estimate) of a traced inference: the dense model's MACs (LSTM and Dense(10)), the same instructions
    # as the -icount runs (the stream hardly depends on the data), a breakdown that adds up, ms at 64 MHz.
    assert report.macs_per_inference == 78_848 + 16 * 10 and report.nonzero_macs_per_inference < 78_848 * 0.35
    breakdown = report.cycle_estimate
    assert abs(breakdown["instructions"] - report.instructions_per_inference) < 0.005 * breakdown["instructions"]
    assert sum(breakdown["cycles_by_class"].values()) == report.cycles_per_inference
    assert report.instructions_per_inference < report.cycles_per_inference < 2 * report.instructions_per_inference
    assert report.cycles_per_mac == pytest.approx(report.cycles_per_inference / report.macs_per_inference)
    assert report.ms_at_clock == pytest.approx(report.cycles_per_inference / 64e3) and report.clock_mhz == 64
    # The tight arena is tight: the harness fails with 16 bytes less.
    with pytest.raises(FirmwareError, match="AllocateTensors failed"):
        toolchain = find_toolchain("cortex-m4")
        from keras_expander.firmware import device
        device.run(toolchain, tmp_path / "fw" / "build" / "app.elf", deploy.device_inputs(content, sequences(1)),
                   tmp_path / "probe", timeout_s=120, arena_limit=report.arena_bytes - 16)


def test_decode_pruned_model_matches_its_uncompressed_twin(int8_models, tmp_path):
    require_toolchain("cortex-m4")
    plain = int8_models["lstm"]
    encoded, tensors = decode_prune(plain)
    x = sequences(24, seed=3)
    assert tensors and all(t.encoded_bytes < t.dense_bytes for t in tensors)
    assert "TFLM_DECODE" in project.model_ops(encoded)
    assert deploy.encoding_mismatches(plain, encoded, x) == 0
    report = deploy.deploy(encoded, x, target="cortex-m4", out_dir=tmp_path / "fw")
    assert report.bitexact_vs_tflm_python
    np.testing.assert_array_equal(outputs_file(report), python_outputs(plain, x))
    dense = deploy.deploy(plain, x[:2], target="cortex-m4", out_dir=tmp_path / "dense")
    assert report.model_flash_bytes < dense.model_flash_bytes
    assert report.arena_bytes > dense.arena_bytes  # the trade-off: weights are expanded into the arena


def test_decode_refuses_a_model_with_nothing_to_gain():
    dense = export.convert(tiny_model("lstm", 4, 0.0), "int8", sequences(16))[0]
    with pytest.raises(CompressionError, match="No int8 weight tensor"):
        decode_prune(dense)


def test_cmsis_nn_refuses_a_decode_lstm_saying_why(int8_models, tmp_path):
    require_toolchain("cortex-m4", "cmsis_nn")
    encoded, _ = decode_prune(int8_models["lstm"])
    with pytest.raises(FirmwareError, match="precomputes kernel sums"):
        deploy.deploy(encoded, sequences(2), target="cortex-m4", kernels="cmsis_nn", out_dir=tmp_path / "fw")


def test_model_with_an_op_tflm_lacks_fails_naming_the_op(int8_models, tmp_path):
    toolchain = require_toolchain("host")
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = model_editor.read(int8_models["lstm"])
    op = next(op for op in model.subgraphs[0].operators if op.opcode_name == "STRIDED_SLICE")
    op.opcode = schema.BuiltinOperator.DENSIFY  # TFLM has no DENSIFY kernel
    with pytest.raises(FirmwareError, match="DENSIFY"):
        project.write_project(bytes(model.build()), tmp_path / "fw", toolchain.tree)


def test_missing_toolchain_names_the_packages_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FirmwareError, match="apt-get install gcc-arm-none-eabi"):
        find_toolchain("cortex-m4")


def test_missing_tree_says_what_to_pass(tmp_path):
    require_toolchain("host")
    with pytest.raises(FirmwareError, match="is not a TFLite Micro tree"):
        find_toolchain("host", tree=tmp_path)
    with pytest.raises(ValueError, match="kernels='cmsis_nn' runs on Cortex-M only"):
        find_toolchain("host", "cmsis_nn")


def test_objects_cached_by_content_follow_the_headers_beside_them(tmp_path, monkeypatch):
    from keras_expander.firmware.toolchain import compile_objects

    toolchain = require_toolchain("host")
    monkeypatch.setenv("KERAS_EXPANDER_CACHE", str(tmp_path / "cache"))
    objects = {}
    for name, value in (("a", 1), ("b", 1), ("c", 2)):  # a and b: the same files in two projects, b written later
        (tmp_path / name).mkdir()
        (tmp_path / name / "value.h").write_text(f"#define KE_VALUE {value}\n")
        (tmp_path / name / "harness.cc").write_text('#include "value.h"\nint KeValue() { return KE_VALUE; }\n')
        objects[name] = compile_objects(toolchain, [tmp_path / name / "harness.cc"], by_content=True)[0]
        objects[name + "_ns"] = objects[name].stat().st_mtime_ns
    assert objects["a"] == objects["b"] != objects["c"] and objects["a"].is_relative_to(tmp_path / "cache")
    assert objects["a_ns"] == objects["b_ns"]  # b reused a's object although its files are newer
    assert objects["a"].read_bytes() != objects["c"].read_bytes()


def test_board_profile_and_sizes_are_checked():
    assert deploy.board_budget("stm32f411").ram_kib == 128
    assert {name: board.clock_mhz for name, board in deploy.BOARDS.items() if board.core == "cortex-m4"} == {
        "nrf52840": 64, "stm32f407": 168, "stm32f411": 100, "stm32l476": 80, "mps2-an386": 25}
    assert deploy.board_budget("nrf52840", ram_kib=64).ram_kib == 64
    with pytest.raises(ValueError, match="Argument `board`"):
        deploy.board_budget("esp32")
    with pytest.raises(ValueError, match="flash_kib"):
        deploy.board_budget("nrf52840", flash_kib=-1)


def test_cli_firmware_runs_real_test_sequences(int8_models, data_dir, tmp_path, capsys):
    require_toolchain("cortex-m4")
    from keras_expander import cli

    path = tmp_path / "int8.tflite"
    path.write_bytes(int8_models["lstm"])
    code = cli.main(["firmware", str(path), "--target", "cortex-m4", "--kernels", "reference", "--compression",
                     "tflm_prune", "--test-samples", "16", "--data-dir", str(data_dir), "--out",
                     str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "identical to the plain model" in printed and "instructions/inference" in printed
    assert "cycles/inference (est.)" in printed and "cycles (est.): an estimate" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["bitexact_vs_plain_tflm_python"] and report["builds"][0]["bitexact_vs_tflm_python"]
    assert report["encoded_bytes"] < report["plain_bytes"]
