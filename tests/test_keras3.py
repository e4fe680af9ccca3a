"""Keras 3 in fresh processes: importing keras_expander changes nothing, and a Keras 3 GRU + Bidirectional(LSTM) +
stacked model is pruned on real sequential MNIST.

Each test runs a script in a new Python without TF_USE_LEGACY_KERAS (the test process sets it, see conftest.py),
so tf.keras starts out as Keras 3 there, as for any Keras 3 user.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest


def fresh_environment(**env) -> dict:
    """This process's environment without TF_USE_LEGACY_KERAS (which conftest.py sets here), plus `env`: a new
    Python starts with tf.keras as Keras 3, as for any Keras 3 user."""
    return {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"} | env


def run_fresh(script: str, timeout: float = 600, **env) -> dict:
    """Runs `script` in a new Python (`fresh_environment(**env)`); returns the JSON it prints last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                            timeout=timeout, env=fresh_environment(**env),
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


PRUNE_BOTH = """
    import json, sys
    import numpy as np
    {imports}
    import keras_expander as ke
    imported = {{name: name in sys.modules for name in ("tensorflow", "tensorflow_model_optimization", "keras",
                                                         "tf_keras")}}
    import keras, tf_keras
    x = np.random.default_rng(0).normal(size=(64, 5, 3)).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("int64")
    sparsity = {{}}
    for k in (tf_keras, keras):  # tf_keras first: it imports tfmot
        model = k.Sequential([k.Input((5, 3)), k.layers.LSTM(8, name="rnn"), k.layers.Dense(2)])
        schedule = ke.ExpanderPruningSchedule(final_sparsity=0.5, begin_step=0, end_step=4, frequency=2,
                                              stop_rule="hold")
        pruned = ke.prune_expander(model, schedule)
        pruned.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = pruned.fit(x, y, batch_size=16, epochs=2, callbacks=[ke.ExpanderPruningCallback()], verbose=0)
        sparsity[k.__name__] = history.history["sparsity/rnn"][-1]
    import tensorflow as tf
    print(json.dumps({{"imported": imported, "sparsity": sparsity, "tf_keras_module": tf.keras.__name__,
                      "tfmot_imported": "tensorflow_model_optimization" in sys.modules}}))
"""


# keras_expander imported first, and after TensorFlow with tf.keras not yet resolved (where an unguarded tfmot
# import would turn it into tf_keras); "import keras; import keras_expander" is the MNIST test's start.
@pytest.mark.parametrize("imports", ["", "import tensorflow as tf"])
def test_keras3_user_keeps_keras3_after_importing_and_using_keras_expander(imports):
    out = run_fresh(PRUNE_BOTH.format(imports=imports))
    assert not out["imported"]["tensorflow_model_optimization"] and not out["imported"]["tf_keras"]
    assert out["imported"]["tensorflow"] == bool(imports)  # keras_expander itself imports no TensorFlow
    assert out["tfmot_imported"]  # pruning the tf_keras model needed it ...
    assert out["tf_keras_module"].startswith("keras")  # ... and tf.keras is still Keras 3 (keras._tf_keras.keras)
    assert out["sparsity"] == {"tf_keras": pytest.approx(0.5, abs=0.01), "keras": pytest.approx(0.5, abs=0.01)}


def test_tf_keras_user_keeps_tf_keras():
    out = run_fresh(PRUNE_BOTH.format(imports=""), TF_USE_LEGACY_KERAS="1")
    assert out["tf_keras_module"].startswith("tf_keras")
    assert out["sparsity"]["tf_keras"] == pytest.approx(0.5, abs=0.01)


MNIST_GRU_BIDIRECTIONAL_STACKED = """
    import json, math
    import keras
    import keras_expander as ke
    from keras_expander import layers as layers_lib
    from keras_expander import datasets
    import numpy as np

    (x_train, y_train), (x_test, y_test) = datasets.sequential_mnist({data_dir!r})
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28))
    hidden = keras.layers.GRU(32, return_sequences=True, name="gru")(inputs)
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(16, return_sequences=True), name="bilstm")(hidden)
    hidden = keras.layers.LSTM(16, name="lstm")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    batch = 256
    steps = math.ceil(len(x_train) / batch)
    schedule = ke.ExpanderPruningSchedule(final_sparsity=0.8, begin_step=0, end_step=int(0.7 * steps) // 10 * 10,
                                          frequency=10, stop_rule="monitor")
    pruned = ke.prune_expander(model, schedule)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = pruned.fit(x_train, y_train, batch_size=batch, epochs=1, verbose=0,
                         callbacks=[ke.ExpanderPruningCallback()])
    stripped = ke.strip_pruning(pruned)
    measured = {{}}
    for layer in stripped.layers:
        for key, variable in (layers_lib.matrix_variables(layer).items() if layers_lib.is_recurrent(layer) else ()):
            w = np.asarray(variable)
            measured[f"{{layer.name}}/{{key}}"] = 1 - np.count_nonzero(w) / w.size
    stripped.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    _, accuracy = stripped.evaluate(x_test, y_test, verbose=0)
    graphs = [report.name for report in ke.analyze(stripped, gate_views=("per_gate",))]
    import tensorflow as tf
    print(json.dumps({{"logged": {{key: values[-1] for key, values in history.history.items()
                                 if key.startswith("sparsity/")}}, "measured": measured, "accuracy": accuracy,
                      "graphs": graphs, "tf_keras_version": tf.keras.__version__,
                      "wrapper_classes": sorted({{type(layer).__module__ for layer in pruned.layers
                                                  if hasattr(layer, "pruning_vars")}})}}))
"""


def test_keras3_gru_bidirectional_stacked_model_reaches_the_target_on_real_mnist(data_dir):
    out = run_fresh(MNIST_GRU_BIDIRECTIONAL_STACKED.format(data_dir=str(data_dir)))
    assert out["tf_keras_version"].startswith("3")
    assert out["wrapper_classes"] == ["keras_expander.pruning.keras3_wrapper"]
    assert set(out["logged"]) == {"sparsity/gru", "sparsity/bilstm", "sparsity/lstm"}
    assert all(value == pytest.approx(0.8, abs=0.005) for value in out["logged"].values()), out["logged"]
    assert set(out["measured"]) == {"gru/kernel", "gru/recurrent_kernel", "lstm/kernel", "lstm/recurrent_kernel"} | {
        f"bilstm/{direction}/{matrix}" for direction in ("forward", "backward")
        for matrix in ("kernel", "recurrent_kernel")}
    assert all(value == pytest.approx(0.8, abs=0.005) for value in out["measured"].values()), out["measured"]
    assert "bilstm/forward/kernel/i" in out["graphs"] and "gru/recurrent_kernel/h" in out["graphs"]
    assert out["accuracy"] > 0.5  # one epoch of pruned training learns MNIST (chance is 0.1)
