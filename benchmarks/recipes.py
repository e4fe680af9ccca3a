"""The benchmarks' shared recipe: the sequential-MNIST classifier, how a trained model is measured, the split sizes,
and the main job (examples/sequential_mnist.py) run as the command the results record.

Benchmarks and examples import this module (`from benchmarks.recipes import ...`, with the repository root on
`sys.path`); no benchmark imports an example, so a change to the demo's arguments or output moves no benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import keras_expander as ke
from keras_expander.predictions import chance_accuracy, no_conclusion_reason

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = os.path.join("examples", "sequential_mnist.py")

VALIDATION_SIZE = 5000
HOLDOUT_SIZE = 1000  # validation images that stop_rule="tolerance" tests each pruning step on


CELLS = ("lstm", "simple_rnn", "gru")


def build_model(cell: str, units: int, timesteps: int = 28, features: int = 28, classes: int = 10,
                batch_size: int | None = None, keras_version: str = "tf_keras"):
    """A recurrent classifier: Input -> LSTM/SimpleRNN/GRU(units) -> Dense(classes) logits.

    Args:
        cell: "lstm", "simple_rnn" or "gru".
        units: Hidden units H.
        timesteps, features: Input shape (T, I).
        classes: Output logits.
        batch_size: Fixed batch size (1 for TFLite export), or None.
        keras_version: "tf_keras" or "keras3": which Keras builds the model.

    Returns:
        An uncompiled functional model of that Keras.

    Raises:
        ValueError: unknown `cell` or `keras_version`.
    """
    from keras_expander import frameworks

    if keras_version not in ("tf_keras", "keras3"):
        raise ValueError(f"Argument `keras_version` must be 'tf_keras' or 'keras3'. Received: "
                         f"keras_version={keras_version!r}")
    k = frameworks.keras if keras_version == "keras3" else frameworks.tf_keras
    layers = {"lstm": k.layers.LSTM, "simple_rnn": k.layers.SimpleRNN, "gru": k.layers.GRU}
    if cell not in layers:
        raise ValueError(f"Argument `cell` must be one of {sorted(layers)}. Received: cell={cell!r}")
    inputs = k.Input((timesteps, features), batch_size=batch_size, name="rows")
    hidden = layers[cell](units, name=cell)(inputs)
    outputs = k.layers.Dense(classes, name="logits")(hidden)
    return k.Model(inputs, outputs, name=f"seq_mnist_{cell}{units}")


def measure_trained_model(model, x_test, y_test):
    """Strips a trained model if it is pruned, then measures its test accuracy and the spectra of its graphs.

    Args:
        model: A trained tf_keras or Keras 3 model, with or without pruning wrappers.
        x_test: float32 array of shape (N, T, F); y_test: int array of shape (N,).

    Returns:
        (test accuracy in [0, 1], `AnalysisReport` of the per-gate graphs, per-layer summaries).
    """
    from keras_expander.frameworks import keras, keras_flavour, tf_keras
    from keras_expander.pruning.wrapper import pruning_wrappers

    if pruning_wrappers(model):
        model = ke.strip_pruning(model)
    losses = (keras if keras_flavour(model) == "keras3" else tf_keras).losses
    model.compile(loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    report = ke.analyze(model, gate_views=("per_gate",))
    return float(accuracy), report, ke.summarize_layers(report)


def label_counts(y) -> list[int]:
    """Count of each class in labels `y` (class indices of shape (N,)): what a result stores so that a report rebuilt
    from its JSON knows the chance accuracy of the test labels (`labels_from_counts`)."""
    return np.bincount(np.asarray(y, dtype=np.int64).reshape(-1)).tolist()


def labels_from_counts(counts) -> np.ndarray:
    """Labels, sorted, with the class counts `counts` (`label_counts`); the same chance accuracy as the originals."""
    return np.repeat(np.arange(len(counts)), counts)


def chance_check(dense_accuracy: float | None, y, what: str = "the dense model") -> dict:
    """Whether a report may conclude from accuracy: a model near chance never learned, so its knees, crossings,
    verdicts and comparisons mean nothing (`keras_expander.predictions.near_chance`).

    Args:
        dense_accuracy: Test accuracy in [0, 1] of the reference (dense) model, or None when none was trained.
        y: The test labels it was measured on (class indices of shape (N,)).
        what: The model's name in the reason.

    Returns:
        {"dense_accuracy", "chance_accuracy" (both in [0, 1]), "no_conclusion": the reason a report prints instead of
        its verdicts ("no conclusion: ...") or None when it may conclude (and when no dense model was trained)}.
    """
    reason = None if dense_accuracy is None else no_conclusion_reason(dense_accuracy, y, what)
    return {"dense_accuracy": dense_accuracy, "chance_accuracy": chance_accuracy(y), "no_conclusion": reason}


def run_main_job(train_argv: list[str]) -> dict:
    """Runs the main job (examples/sequential_mnist.py) with these arguments in a subprocess, as a user would.

    Args:
        train_argv: Its command-line arguments; must include ``--out FOLDER``.

    Returns:
        The summary.json it wrote into FOLDER.

    Raises:
        subprocess.CalledProcessError: the job failed (its output went to this process's stdout and stderr).
    """
    subprocess.run([sys.executable, os.path.join(ROOT, MAIN_JOB), *train_argv], check=True)
    with open(os.path.join(train_argv[train_argv.index("--out") + 1], "summary.json")) as stream:
        return json.load(stream)


def write_report(out_dir: str, name: str, payload: dict, markdown: str) -> None:
    """Writes a benchmark's <out_dir>/<name>.json (`payload`) and <name>.md (`markdown`), each atomically, and prints
    the Markdown."""
    from keras_expander.files import write_atomic

    os.makedirs(out_dir, exist_ok=True)
    write_atomic(os.path.join(out_dir, f"{name}.json"), json.dumps(payload, indent=2))
    write_atomic(os.path.join(out_dir, f"{name}.md"), markdown)
    print(markdown)


def main_job_command(train_argv: list[str]) -> str:
    """The command line that reproduces a main-job run, as recorded in results."""
    return " ".join(["python", MAIN_JOB, *train_argv])
