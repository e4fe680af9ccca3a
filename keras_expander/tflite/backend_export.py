"""Export of a Keras 3 model that lives on the JAX or PyTorch backend: in a TensorFlow-backend subprocess.

The TFLite converter needs TensorFlow, and a Keras 3 process keeps the backend it started with (KERAS_BACKEND is
read once, at `import keras`). So `export_model` called on JAX or PyTorch saves the stripped model (`.keras` files
hold no backend), its test and calibration arrays and its outputs on the test sequences under the original
backend, and runs the export's worker command on that job with ``KERAS_BACKEND=tensorflow`` (`export_model` passes
``python -m keras_expander.tflite.export backend-job``). That process loads the model and runs the same
`export_model` as everywhere else, passing the original outputs as its
`reference`: every report records the largest difference between them and the TensorFlow backend's outputs, and an
export beyond `FLOAT_TOLERANCE` fails. Progress lines come back as they are printed; a refused or failed export is
raised here as the same `ValueError` or `ExportError` with the same message; the output folder stays
all-or-nothing (the worker builds it staged, as every export).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading

import numpy as np

from keras_expander.tflite.report import ExportError, ExportReport

ERROR_FILE = "error.json"


def keras_backend() -> str:
    """The backend of this process's Keras 3 ("tensorflow", "jax", "torch" or "numpy")."""
    import keras

    return keras.backend.backend()


def export_in_tensorflow(model, modes, x_test, y_test, representative_data, out_dir: str, worker_command: list,
                         print_fn=None, timeout_s: float = 3600.0, **options) -> list:
    """Runs `export_model` on a TensorFlow-backend copy of a Keras 3 model of another backend.

    Args:
        model: A stripped Keras 3 model (any backend).
        modes, x_test, y_test, representative_data, out_dir, print_fn: As `export_model`'s (x_test (N, T, F)
            float32, y_test (N,) labels, representative_data (N, T, F) float32 or None).
        worker_command: The command (argv list) that exports the job file given as its last argument in a
            TensorFlow-backend process and writes `ERROR_FILE` beside it on a refusal or failed step.
        timeout_s: Seconds before the worker is killed (the export fails with `ExportError`).
        **options: `export_model`'s remaining keyword arguments (target, sparsity_encoding, flash_kib, ram_kib,
            firmware_mode, min_agreement), passed on as they are.

    Returns:
        The worker's `ExportReport`s, with `reference_backend` this process's backend.

    Raises:
        ValueError: the worker refused the model or the arguments (`export_model`'s checks), same message.
        ExportError: the worker's conversion or verification failed (same message), or it crashed or timed out.
    """
    say = print_fn or (lambda line: None)
    backend = keras_backend()
    with tempfile.TemporaryDirectory(prefix="keras_expander_backend_export_") as folder:
        say(f"[{backend}] computing the reference outputs and saving the model for a TensorFlow-backend export ...")
        reference = np.asarray(model.predict(x_test, batch_size=256, verbose=0), np.float32)
        model.save(os.path.join(folder, "model.keras"))
        arrays = {"x_test": np.asarray(x_test, np.float32), "y_test": np.asarray(y_test), "reference": reference}
        if representative_data is not None:
            arrays["representative_data"] = np.asarray(representative_data, np.float32)
        np.savez(os.path.join(folder, "arrays.npz"), **arrays)
        job = os.path.join(folder, "job.json")
        with open(job, "w") as stream:
            json.dump({"modes": list(modes), "out_dir": os.path.abspath(out_dir), "backend": backend,
                       "options": options}, stream)
        environment = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
        # No preexec_fn: JAX warns of (and may deadlock in) a fork that runs Python code; the worker arranges to
        # die with this process itself. Its stderr goes to a file, so that a long one cannot block it while its
        # progress lines are read here; the timer bounds the whole run, output or not.
        with open(os.path.join(folder, "stderr.txt"), "w+") as stderr:
            process = subprocess.Popen([*worker_command, job], stdout=subprocess.PIPE, stderr=stderr, text=True,
                                       env=environment)
            timed_out = threading.Event()
            timer = threading.Timer(timeout_s, lambda: (timed_out.set(), process.kill()))
            timer.start()
            try:
                for line in process.stdout:
                    say(line.rstrip("\n"))
                process.wait()
            finally:
                timer.cancel()
                if process.poll() is None:  # interrupted here: the worker goes too
                    process.kill()
                    process.wait()
            stderr.seek(0)
            tail = "\n".join(stderr.read().strip().splitlines()[-8:])
        if timed_out.is_set():
            raise ExportError(f"The TensorFlow-backend export of model {model.name!r} did not finish in "
                              f"{timeout_s:.0f} s.")
        error_path = os.path.join(folder, ERROR_FILE)
        if os.path.exists(error_path):
            with open(error_path) as stream:
                failure = json.load(stream)
            raise (ValueError if failure["type"] == "ValueError" else ExportError)(failure["message"])
        if process.returncode != 0:
            raise ExportError(f"The TensorFlow-backend export of model {model.name!r} failed (exit code "
                              f"{process.returncode}):\n{tail}")
    with open(os.path.join(out_dir, "report.json")) as stream:
        return [ExportReport(**report) for report in json.load(stream)["reports"]]
