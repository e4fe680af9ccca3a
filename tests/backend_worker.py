"""One seeded Keras 3 pruning job on the backend in KERAS_BACKEND, from `fit` to an int8 export; for
tests/test_backends.py, which runs it in a fresh process per backend and compares them.

  KERAS_BACKEND=jax python tests/backend_worker.py OUT_DIR

Real data (the first 1,024 sequential-MNIST training images, held-out accuracy on the last 512), an LSTM(16) whose
initial weights come from numpy (Glorot-uniform, the same on every backend), Adam without shuffling, the default
tolerance rule with its held-out batch; one epoch, `analyze` and `strip_pruning`, a `.keras` save and
`keras_expander.load_model`, a second epoch with a new callback, and `export_model` to int8 (through a
TensorFlow-backend process on JAX and PyTorch). On JAX and PyTorch TensorFlow, tf_keras and tfmot cannot be
imported in this process (an import raises ModuleNotFoundError, as where they are not installed; Keras' own
`clone_model` and `save` then skip their optional TensorFlow checks), so the job shows that keras_expander needs
none of them there. Writes OUT_DIR/result.json, OUT_DIR/masks.npz, OUT_DIR/export/ and OUT_DIR/export_inputs.npy
(16 test sequences).
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys

import numpy as np

BATCH, UNITS, FRACTION = 64, 16, 0.8
TENSORFLOW_PACKAGES = ("tensorflow", "tf_keras", "tensorflow_model_optimization")


class WithoutTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: importing TensorFlow, tf_keras or tfmot raises ModuleNotFoundError, as if not installed. Their
    specs are still found, without an origin, for probes such as PyTorch's (torch/_dynamo/trace_rules.py)."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in TENSORFLOW_PACKAGES:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked in this backend test)", name=spec.name)

    def exec_module(self, module):
        pass


def run(out_dir: str, data_dir: str | None = None) -> dict:
    """The job; returns (and writes) its result."""
    import keras

    import keras_expander as ke
    from keras_expander import datasets
    from keras_expander.pruning import wrapper as wrapper_lib
    from keras_expander.tflite import export

    (x_train, y_train), (x_test, y_test) = datasets.sequential_mnist(data_dir)
    x, y = x_train[:1024], y_train[:1024]
    holdout = (x_train[-512:], y_train[-512:])
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.LSTM(UNITS, name="rnn"),
                              keras.layers.Dense(10, name="out")])
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") * np.sqrt(6 / sum(w.shape)) if w.ndim == 2
                       else np.zeros(w.shape, "float32") for w in model.get_weights()])
    steps = 2 * len(x) // BATCH
    schedule = ke.ExpanderPruningSchedule(final_sparsity=FRACTION, begin_step=0, end_step=steps // 2, frequency=4,
                                          tolerance=100.0)  # measured at every step, never paused
    pruned = ke.prune_expander(model, schedule)

    def fit(model, epoch):
        model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        callback = ke.ExpanderPruningCallback(holdout=holdout)
        model.fit(x, y, batch_size=BATCH, epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0,
                  callbacks=[callback])
        return callback

    first = fit(pruned, 0)
    worst_delta_r = min(report.unweighted.delta_r for report in ke.analyze(pruned))
    stripped_first_epoch = ke.strip_pruning(pruned)
    stripped_equals_wrapped = float(np.max(np.abs(pruned.predict(x_test[:64], verbose=0)
                                                  - stripped_first_epoch.predict(x_test[:64], verbose=0))))
    path = os.path.join(out_dir, "pruned.keras")
    pruned.save(path)
    loaded = ke.load_model(path)
    wrapper = loaded.layers[0]
    resumed_step = int(wrapper.pruning_step.numpy())
    second = fit(loaded, 1)
    masks = {key.replace("/", "_"): mask.numpy() for key, mask in
             zip(("kernel", "recurrent_kernel"), (entry[1] for entry in wrapper.pruning_vars))}
    stored = [entry[0].numpy() for entry in wrapper.pruning_vars]
    pruned_weights_zero = all(np.all(w[m == 0] == 0) for w, m in zip(stored, masks.values()))
    sparsity = wrapper_lib.mask_sparsity(wrapper)
    stripped = ke.strip_pruning(loaded)
    tensorflow_imported = any(name in sys.modules for name in TENSORFLOW_PACKAGES)
    reports = export.export_model(stripped, ("int8",), x_test[:64], y_test[:64], x[::8], target="tflm",
                                  out_dir=os.path.join(out_dir, "export"))
    np.save(os.path.join(out_dir, "export_inputs.npy"), x_test[:16])  # for a firmware run
    events = first.events + second.events
    result = {
        "backend": keras.backend.backend(), "tensorflow_imported": tensorflow_imported,
        "sparsity": sparsity, "resumed_step": resumed_step, "final_step": int(wrapper.pruning_step.numpy()),
        "pruned_weights_zero": bool(pruned_weights_zero), "stripped_equals_wrapped": stripped_equals_wrapped,
        "worst_delta_r": float(worst_delta_r),
        "event_steps": [event.step for event in events], "holdout_accuracies": [
            event.holdout_accuracy for event in events], "committed": [event.committed for event in events],
        "reference_backend": reports[0].reference_backend,
        "max_abs_diff_keras_reference": reports[0].max_abs_diff_keras_reference,
        "keras_accuracy": reports[0].keras_accuracy, "report_lines": export.format_report(reports)}
    np.savez(os.path.join(out_dir, "masks.npz"), **masks)
    with open(os.path.join(out_dir, "result.json"), "w") as stream:
        json.dump(result, stream)
    return result


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        sys.meta_path.insert(0, WithoutTensorFlow())
    run(sys.argv[1], os.environ.get("KERAS_EXPANDER_DATA"))
