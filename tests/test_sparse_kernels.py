"""Sparse int8 kernels (KE_SPARSE_LSTM_V1, KE_SPARSE_FC_V1): the rewritten model, built into firmware, gives
outputs identical byte for byte to the plain model on TFLM's stock kernels built from the same tree, on the host
and on Cortex-M4 under QEMU; random masks at 50-100 % sparsity, entirely zero rows and columns, odd sizes, batch
1, state reset between sequences (every sequence starts from reset state). The blob format has a closed form.

Kernel-level differential tests (TFLM's KernelRunner) were run while writing the kernels; these tests hold the
same property through whole models, as a user's firmware runs them.
"""

import functools

import numpy as np
import pytest
from test_firmware import require_toolchain, tiny_model

from keras_expander.firmware import deploy, project
from keras_expander.firmware.model_edit import CompressionError
from keras_expander.firmware.sparse_rewrite import sparse_blob, sparse_rewrite
from keras_expander.firmware.toolchain import FirmwareError
from keras_expander.tflite import export

STEPS, FEATURES = 6, 5  # odd sizes: 5 inputs, 7 units


def masked_model(cell, units, sparsity, zero_row_and_column=False):
    return tiny_model(cell, units, sparsity, seed=2, steps=STEPS, features=FEATURES, classes=3,
                      zero_row_and_column=zero_row_and_column)


def sequences(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, STEPS, FEATURES)).astype("float32")


@functools.lru_cache(maxsize=None)
def int8_model(cell, units, sparsity, zero_row_and_column=False):
    """The full-int8 flatbuffer of `masked_model` (converted once per test session: a conversion takes ~10 s)."""
    model = masked_model(cell, units, sparsity, zero_row_and_column=zero_row_and_column)
    return export.convert(model, "int8", sequences(64, seed=9))[0]


def outputs(report):
    return np.fromfile(f"{report.project_dir}/run/outputs.bin", np.int8).reshape(report.samples, -1)


def both_builds(plain, tmp_path, target="host", kernels="reference", n=24, force=False):
    sparse, rewritten = sparse_rewrite(plain, force=force)
    x = sequences(n)
    stock = deploy.deploy(plain, x, target=target, kernels=kernels, out_dir=tmp_path / "stock")
    ours = deploy.deploy(sparse, x, target=target, kernels=kernels, out_dir=tmp_path / "sparse",
                         reference_content=plain)
    return stock, ours, rewritten


# Slow-marked (45 s): by default the kernel-runner test holds these cases on the host, kernel by kernel, and the
# Cortex-M4 test below holds the whole-model property.
@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [0.5, 0.99])
def test_sparse_lstm_equals_the_stock_kernel_on_the_host(sparsity, tmp_path):
    require_toolchain("host")
    plain = int8_model("lstm", 7, sparsity, zero_row_and_column=sparsity == 0.5)
    # Below about 50 % the blobs are not smaller: force the rewrite to hold the kernels there too.
    stock, ours, rewritten = both_builds(plain, tmp_path, force=sparsity <= 0.5)
    assert "KE_SPARSE_LSTM_V1" in [op.op for op in rewritten]
    assert "KE_SPARSE_LSTM_V1" in ours.ops and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ours.ops
    np.testing.assert_array_equal(outputs(ours), outputs(stock))
    assert deploy.within_tolerance(ours)


@pytest.mark.parametrize("target,kernels", [("cortex-m4", "reference"),
                                            pytest.param("cortex-m4", "cmsis_nn", marks=pytest.mark.slow)])
def test_sparse_lstm_equals_the_stock_kernel_on_cortex_m4(target, kernels, tmp_path):
    toolchain = require_toolchain(target, kernels)
    plain = int8_model("lstm", 20, 0.9)
    stock, ours, rewritten = both_builds(plain, tmp_path, target, kernels)
    if kernels == "reference":
        np.testing.assert_array_equal(outputs(ours), outputs(stock))
    else:  # other ops on CMSIS-NN; our LSTM reproduces the reference LSTM, which CMSIS-NN's matches here
        assert deploy.within_tolerance(ours) and deploy.within_tolerance(stock)
    # Flash: the dense weights are replaced by their blobs (plus flatbuffer alignment and the custom options);
    # arena: the stock reference kernel's plus a fixed ~200 bytes (larger op data, the input widened to int16;
    # under 1 % of an LSTM(128)'s arena, where the benchmark checks the 1.05 x target); fewer instructions.
    saved = sum(op.dense_bytes - op.sparse_bytes for op in rewritten)
    assert stock.model_flash_bytes - saved <= ours.model_flash_bytes <= stock.model_flash_bytes - saved + 256
    reference_arena = stock.arena_bytes if kernels == "reference" else None
    if reference_arena:
        assert ours.arena_bytes <= reference_arena + 256
        assert ours.instructions_per_inference < stock.instructions_per_inference
        # Just above what AllocateTensors uses, the stock LSTM's Prepare cannot get its scratch memory and TFLM's
        # TF_LITE_ASSERT aborts, which on MCUs spins forever (op_macros.h): the harness ends the run with TFLM's
        # message instead of leaving QEMU to its time-out (the arena search probes such sizes).
        from keras_expander.firmware import device

        image = tmp_path / "stock" / "build" / "app.elf"
        probe = deploy.device_inputs(plain, sequences(1))
        used = device.run(toolchain, image, probe, tmp_path / "probe", timeout_s=60).values["arena_used_bytes"]
        with pytest.raises(FirmwareError, match=r"(?s)exit status 5\).*TFLM halted \(TFLITE_ABORT\)"):
            device.run(toolchain, image, probe, tmp_path / "probe", timeout_s=20, arena_limit=-(-used // 16) * 16)


def test_unrolled_simple_rnn_becomes_shared_sparse_fully_connected_ops(tmp_path):
    require_toolchain("cortex-m4")
    plain = int8_model("simple_rnn", 40, 0.9)
    stock, ours, rewritten = both_builds(plain, tmp_path, "cortex-m4")
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    # Every FULLY_CONNECTED of the unrolled cell (the converter folds step 0's recurrent product, whose hidden
    # state is zero), not the dense 3-unit head, whose blob would not be smaller. Each op carries its options
    # (about 70 bytes), so the model shrinks only when the cell's weights are large enough: 40 units here.
    cell_ops = sum(op.opcode_name == "FULLY_CONNECTED" for op in model_editor.read(plain).subgraphs[0].operators) - 1
    assert {op.op for op in rewritten} == {"KE_SPARSE_FC_V1"} and len(rewritten) == cell_ops >= STEPS
    assert stock.bitexact_vs_tflm_python  # the unrolled graph on Cortex-M4's stock kernels, as pip TFLM runs it
    np.testing.assert_array_equal(outputs(ours), outputs(stock))
    assert ours.model_flash_bytes < stock.model_flash_bytes
    with pytest.raises(CompressionError, match="would not make it smaller"):
        sparse_rewrite(int8_model("simple_rnn", 9, 0.9))


def test_sparse_blob_has_the_documented_layout():
    matrix = np.zeros((3, 300), np.int8)
    matrix[0, [1, 299]] = [5, -7]
    matrix[2, 0] = 1
    blob = sparse_blob(matrix)
    # uint16 rows, uint16 cols, width 2 (cols > 255), 3 zero bytes; counts; column indices; values
    assert blob == bytes.fromhex("0300" "2c01" "02" "000000" "0200" "0000" "0100" "0100" "2b01" "0000" "05f901")
    assert len(sparse_blob(np.eye(4, dtype=np.int8))) == 8 + 1 * (4 + 4) + 4


def test_sparse_rewrite_refuses_what_it_cannot_map():
    dense = int8_model("lstm", 7, 0.0)
    with pytest.raises(CompressionError, match="No LSTM or FULLY_CONNECTED op"):
        sparse_rewrite(dense)
    model = masked_model("lstm", 7, 0.9)
    floating = export.convert(model, "float32")[0]
    with pytest.raises(CompressionError, match="not full int8.*--mode int8"):
        sparse_rewrite(floating)


def test_firmware_project_carries_the_kernel_sources(tmp_path):
    toolchain = require_toolchain("host")
    sparse, _ = sparse_rewrite(int8_model("lstm", 7, 0.99))
    project.write_project(sparse, tmp_path, toolchain.tree)
    resolver = (tmp_path / "model_op_resolver.h").read_text()
    assert 'AddCustom("KE_SPARSE_LSTM_V1"' in resolver and '#include "sparse_ops.h"' in resolver
    assert {"sparse_lstm.cc", "sparse_weights.cc", "sparse_ops.h", "sparse_weights.h"} <= {
        path.name for path in tmp_path.iterdir()}


# The host case is slow (make test's 15 minutes): the Cortex-M cases run the same C++ wherever the assembly does
# not apply (two-byte indices, cell counts not a multiple of 4 on the M55).
@pytest.mark.parametrize("target", [pytest.param("host", marks=pytest.mark.slow), "cortex-m4", "cortex-m55"])
def test_kernels_equal_the_stock_kernels_under_tflm_kernel_runner(target, tmp_path):
    """tests/kernels/sparse_kernel_test.cc: TFLM's own kernel test runner runs the stock int8 LSTM and
    FULLY_CONNECTED on dense weights and ours on the blobs, and compares every output byte and the LSTM state
    after each of three sequences (from reset, state carried over, reset again). Cases: 0, 50, 90, 99 and 100 %
    sparsity; 5 x 7, 28 x 128 and 13 x 300 LSTMs; zero rows and columns; two-byte indices; batch- and time-major
    batches; clipping; per-tensor and per-channel FC; bad blobs and options that Prepare must reject. On
    Cortex-M4 (under QEMU) the LSTM's one-byte-index gate rows run the Thumb-2 assembly loops, including rows of
    more than 32 non-zeros (0 and 50 %) and empty rows (100 %); on the Cortex-M55 they run the Helium (MVE)
    loops (rows of more than 16 non-zeros out of line, left and right shifts, saturation), where the cell count
    is a multiple of 4, and the portable C++ otherwise."""
    import subprocess
    from pathlib import Path

    from keras_expander.firmware import device
    from keras_expander.firmware import toolchain as toolchain_lib

    toolchain = require_toolchain(target)
    ours = [project.KERNELS_DIR / name for name in ("sparse_lstm.cc", "sparse_fully_connected.cc",
                                                    "sparse_weights.cc")]
    here = Path(__file__).parent / "kernels"
    stock = [path for path in toolchain_lib.kernel_sources(
        toolchain, ["Register_UNIDIRECTIONAL_SEQUENCE_LSTM", "Register_FULLY_CONNECTED"]) if path not in ours]
    test_support = [toolchain.tree / "tensorflow/lite/micro" / name for name in (
        "kernels/kernel_runner.cc", "mock_micro_graph.cc", "fake_micro_context.cc", "test_helpers.cc",
        "test_helper_custom_ops.cc")]
    objects = toolchain_lib.compile_objects(toolchain, stock + test_support)  # cached with the tree's objects
    objects += toolchain_lib.compile_objects(toolchain, [*ours, here / "sparse_kernel_test.cc"], tmp_path,
                                             extra_flags=(f"-I{project.KERNELS_DIR}",))
    binary = tmp_path / "sparse_kernel_test"
    script = None
    if toolchain.core:
        objects += toolchain_lib.compile_objects(toolchain, toolchain_lib.startup_sources(toolchain), tmp_path)
        # The test's std::vector buffers live on the heap: 2 MiB, in the board's 4 MiB RAM (Cortex-M4) or in 16 MiB
        # of the Cortex-M55 board's DDR at 0x60000000 (its 512 KiB DTCM is too small).
        ram_origin, ram_bytes = (0x60000000, 16 << 20) if target == "cortex-m55" else (None, device.QEMU_RAM_BYTES)
        script = project.write_linker_script(toolchain.tree, tmp_path, toolchain.core.code_bytes, ram_bytes,
                                             device.STACK_BYTES, 2 << 20, target, ram_origin)
    # %f in the case names needs newlib-nano's float printf.
    command = device.link_command(toolchain, [*objects, toolchain_lib.core_archive(toolchain)], binary, script,
                                  extra_flags=("-u", "_printf_float") if toolchain.core else ())
    linked = subprocess.run(command, capture_output=True, text=True)
    assert linked.returncode == 0, linked.stderr[-2000:]
    run = device.qemu_command(toolchain, binary, count_instructions=False) if toolchain.core \
        else [str(binary)]
    result = subprocess.run(run, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0 and summary.endswith(" 0 failures"), result.stdout[-3000:]
    assert int(summary.split()[0]) >= 250  # every case ran
