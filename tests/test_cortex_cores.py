"""Firmware for the Cortex-M7, M33 and M55 (QEMU's mps2-an500, mps2-an505 Secure, mps3-an547 with Helium): one
small int8 LSTM built with TFLM's reference kernels, with CMSIS-NN (DSP or MVE code, picked by the compiler's
feature macros), and with CMSIS-NN plus keras_expander's sparse kernels, gives outputs byte for byte equal to the
reference build of the same core (and to the pip TFLite Micro interpreter); no Cortex-M4 cycle estimate is applied
to these cores; a board of another core than --target is refused.

Needs the Arm toolchain, QEMU and the TFLM trees, like tests/test_firmware.py (skipped without them). From an
empty firmware cache each core compiles two TFLM core archives (reference and CMSIS-NN, a few minutes on two
cores; about 100 s per core), so all three run with `make test-slow`; by default tests/test_library.py builds the
Cortex-M55 (Helium) library and compares it with that core's reference build.
"""

import numpy as np
import pytest

from keras_expander import cli
from keras_expander.firmware import deploy
from keras_expander.firmware.rewrites import kernel_rewrite
from keras_expander.tflite import export
from test_firmware import outputs_file, require_toolchain, sequences, tiny_model


@pytest.fixture(scope="module")
def lstm_int8():
    """Full-int8 LSTM(16), 80 % of its weights zero (so the sparse kernels take both LSTM and FULLY_CONNECTED)."""
    return export.convert(tiny_model("lstm", 16, 0.8), "int8", sequences(64, seed=5))[0]


@pytest.mark.parametrize("target", [pytest.param(target, marks=pytest.mark.slow)
                                    for target in ("cortex-m7", "cortex-m33", "cortex-m55")])
def test_core_builds_equal_its_reference_build_byte_for_byte(lstm_int8, target, tmp_path):
    require_toolchain(target, "cmsis_nn")
    x = sequences(4)
    sparse = kernel_rewrite(lstm_int8, "ke_sparse").content
    builds = {name: deploy.deploy(content, x, target=target, kernels=kernels, out_dir=tmp_path / name,
                                  reference_content=lstm_int8)
              for name, content, kernels in (("reference", lstm_int8, "reference"),
                                             ("cmsis_nn", lstm_int8, "cmsis_nn"), ("ke_sparse", sparse, "cmsis_nn"))}
    expected = outputs_file(builds["reference"])
    for name, report in builds.items():
        assert report.bitexact_vs_tflm_python, name
        np.testing.assert_array_equal(outputs_file(report), expected, err_msg=name)
        assert report.board == deploy.DEFAULT_BOARDS[target] and report.fits
        assert report.instructions_per_inference > 0 and report.image_flash_bytes > report.model_flash_bytes
        assert report.cycles_per_inference is None and report.ms_at_clock is None  # the M4 model is not theirs
    assert any(op.startswith("KE_SPARSE") for op in builds["ke_sparse"].ops)
    lines = deploy.format_reports(list(builds.values()))
    assert any(line.startswith("cycles (est.): not estimated on Cortex-M") for line in lines)


def test_a_board_of_another_core_is_refused(capsys, tmp_path):
    with pytest.raises(ValueError, match="--board stm32f746 is a cortex-m7 board, but --target is cortex-m33"):
        deploy.board_for("cortex-m33", "stm32f746")
    assert deploy.board_for("cortex-m55") == "alif-e3-he" and deploy.board_for("host", "stm32u585") == "stm32u585"
    code = cli.main(["firmware", str(tmp_path / "unread.tflite"), "--target", "cortex-m4", "--board", "nrf5340",
                     "--out", str(tmp_path / "out")])
    assert code == 2 and "--board nrf5340 is a cortex-m33 board, but --target is cortex-m4" in capsys.readouterr().err
