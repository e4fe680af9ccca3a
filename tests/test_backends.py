"""Keras 3 on the JAX and PyTorch backends: pruning, stop rules, save/load, strip and export, each in a fresh process
with KERAS_BACKEND set (a process keeps the backend it imported Keras with).

- The Keras 3 tests of tests/test_pruning.py (the `keras3` parameter of every behaviour test: policies, logs, the
  hold / correct / tolerance / monitor rules, save and resume, strip, GRU, Bidirectional, stacked, nested, bad
  arguments) and of tests/test_trains_as_it_ships.py (sequence masks and stateful states passed through, pruning
  steps under steps_per_execution, held-out accuracy of binary heads) pass on the backend.
- tests/backend_worker.py's seeded job (real MNIST, tolerance rule with its held-out batch, save, load, resume,
  strip, int8 export) runs with TensorFlow, tf_keras and tfmot unimportable, and gives the same events, held-out
  accuracies and masks as on the TensorFlow backend (masks: at least MASK_AGREEMENT of the entries equal and the
  same sparsity; measured identical); its int8 export, made by a TensorFlow-backend process, runs on the
  Cortex-M4 firmware byte for byte as TFLite Micro's Python interpreter does.

The backends come with `make test-backends` (pip extras `keras-expander[jax]`, `[torch]`); where one is missing
its tests are skipped, saying how to install it, unless KERAS_EXPANDER_REQUIRE_BACKENDS=1 (CI), where they fail.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_expander.firmware import deploy
from test_firmware import outputs_file, python_outputs, require_toolchain
from test_keras3 import fresh_environment

import backend_worker

BACKENDS = ("jax", "torch")
KERAS3_TEST_FILES = ("tests/test_pruning.py", "tests/test_trains_as_it_ships.py")  # their `keras3` parameters
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Stated tolerance of the cross-backend mask comparison: float32 arithmetic may order sums differently per
# backend, which can swap the weights on either side of a magnitude threshold.
MASK_AGREEMENT = 0.99


def require_backend(backend: str) -> None:
    """Skips the test when `backend` is not installed, saying how to install it (a failure where CI requires the
    backend tests: KERAS_EXPANDER_REQUIRE_BACKENDS=1)."""
    if importlib.util.find_spec(backend) is None:
        message = (f"the Keras 3 backend {backend!r} is not installed: `make test-backends` installs it (or pip "
                   f"install 'keras-expander[{backend}]')")
        if os.environ.get("KERAS_EXPANDER_REQUIRE_BACKENDS") == "1":
            pytest.fail(f"backend tests are required here: {message}")
        pytest.skip(message)


@pytest.fixture(scope="module")
def worker_runs(tmp_path_factory, data_dir):
    """backend -> (result, folder) of tests/backend_worker.py, run once per backend (TensorFlow's in this
    process: Keras 3 here is on TensorFlow)."""
    runs = {}

    def run(backend):
        if backend not in runs:
            folder = tmp_path_factory.mktemp(f"backend_{backend}")
            if backend == "tensorflow":
                result = backend_worker.run(str(folder), str(data_dir))
            else:
                environment = fresh_environment(KERAS_BACKEND=backend, KERAS_EXPANDER_DATA=str(data_dir))
                completed = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "backend_worker.py"),
                                            str(folder)], capture_output=True, text=True, timeout=900, cwd=ROOT,
                                           env=environment)
                assert completed.returncode == 0, completed.stderr[-3000:]
                with open(folder / "result.json") as stream:
                    result = json.load(stream)
            runs[backend] = result, folder
        return runs[backend]

    return run


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras3_pruning_tests_pass_on_the_backend(backend):
    require_backend(backend)
    completed = subprocess.run([sys.executable, "-m", "pytest", *KERAS3_TEST_FILES, "-k", "keras3", "-q",
                                "-p", "no:cacheprovider", "-W", "ignore::UserWarning"], capture_output=True,
                               text=True, timeout=900, cwd=ROOT, env=fresh_environment(KERAS_BACKEND=backend))
    summary = completed.stdout.strip().splitlines()[-1]
    assert completed.returncode == 0, completed.stdout[-4000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_job_needs_no_tensorflow_and_matches_the_tensorflow_backend(backend, worker_runs):
    require_backend(backend)
    result, folder = worker_runs(backend)
    reference, reference_folder = worker_runs("tensorflow")
    assert result["backend"] == backend and not result["tensorflow_imported"]
    assert result["sparsity"] == pytest.approx(backend_worker.FRACTION, abs=0.005)
    assert result["pruned_weights_zero"] and result["stripped_equals_wrapped"] <= 1e-6
    assert (result["resumed_step"], result["final_step"]) == (16, 32)  # saved after epoch 1, resumed there
    assert result["event_steps"] == reference["event_steps"] and result["committed"] == reference["committed"]
    # held-out accuracies on 512 sequences: equal up to one sequence
    assert np.allclose(result["holdout_accuracies"], reference["holdout_accuracies"], atol=1.01 / 512)
    masks, reference_masks = np.load(folder / "masks.npz"), np.load(reference_folder / "masks.npz")
    for key in reference_masks:
        assert np.count_nonzero(masks[key]) == np.count_nonzero(reference_masks[key]), key
        assert np.mean(masks[key] == reference_masks[key]) >= MASK_AGREEMENT, key


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_pruned_on_the_backend_exports_and_runs_on_the_cortex_m4_bit_exact(backend, worker_runs, data_dir):
    require_backend(backend)
    require_toolchain("cortex-m4", "cmsis_nn")
    result, folder = worker_runs(backend)
    # exported by a TensorFlow-backend process, which checked that it computes there what it computed here
    assert result["reference_backend"] == backend and result["max_abs_diff_keras_reference"] <= 1e-5
    assert any(line.startswith(f"backend: exported from Keras 3 on {backend}") for line in result["report_lines"])
    with open(folder / "export" / "int8.tflite", "rb") as stream:
        content = stream.read()
    x = np.load(folder / "export_inputs.npy")
    report = deploy.deploy(content, x, target="cortex-m4", kernels="cmsis_nn", out_dir=folder / "firmware")
    assert report.bitexact_vs_tflm_python and report.mismatched_sequences == 0 and report.samples == len(x)
    np.testing.assert_array_equal(outputs_file(report), python_outputs(content, x))


def test_a_refusal_in_the_tensorflow_process_is_raised_here_with_its_message(tmp_path):
    import keras

    from keras_expander.tflite import backend_export, export

    # int8 of masked sequences is refused by check_convertible, which runs in the TensorFlow-backend process
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.Masking(), keras.layers.LSTM(4),
                              keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(8, 6, 3)).astype("float32")
    with pytest.raises(ValueError) as in_process:
        export.check_convertible(model, ("int8",), "tflm")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("the previous export")
    with pytest.raises(ValueError) as from_worker:
        backend_export.export_in_tensorflow(model, ("int8",), x, np.arange(8) % 2, x, str(tmp_path / "out"),
                                            [sys.executable, "-m", "keras_expander.tflite.export", "backend-job"])
    assert str(from_worker.value) == str(in_process.value)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["kept.txt"]  # nothing written
