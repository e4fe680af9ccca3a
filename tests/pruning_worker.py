"""Runs one pruning job in a fresh process for the resume and distributed tests; writes its end state to an .npz.

  python tests/pruning_worker.py full OUT.npz                 uninterrupted run, EPOCHS epochs
  python tests/pruning_worker.py first CHECKPOINT OUT.npz     first half, ModelCheckpoint to CHECKPOINT (.keras or
                                                              a TF checkpoint prefix)
  python tests/pruning_worker.py resume CHECKPOINT OUT.npz    fresh model from the checkpoint, second half
  python tests/pruning_worker.py mirrored OUT.npz             full run under MirroredStrategy on 2 logical CPUs
  python tests/pruning_worker.py multiworker OUT.npz          full run as one worker of MultiWorkerMirroredStrategy
                                                              (TF_CONFIG set by the caller)
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import keras_expander as ke  # noqa: E402
from keras_expander.frameworks import tf, tf_keras  # noqa: E402

EPOCHS = 4
BATCH = 32


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6, 8)).astype("float32")
    return x, (x[:, :, 0].sum(axis=1) > 0).astype("int64")


def build():
    tf_keras.utils.set_random_seed(0)
    # Per-gate graphs: this small LSTM's stop rule then fires before the interruption points, so its state must
    # survive them (its union graphs hold later).
    schedule = ke.ExpanderPruningSchedule(final_sparsity=0.97, begin_step=0, end_step=24, frequency=2,
                                          gate_view="per_gate", stop_rule="hold")
    model = tf_keras.Sequential([tf_keras.Input((6, 8)), tf_keras.layers.LSTM(16, name="rnn"),
                                 tf_keras.layers.Dense(2, name="out")])
    model = ke.prune_expander(model, schedule)
    model.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def fit(model, initial_epoch, epochs, extra_callbacks=()):
    x, y = data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0,
                     callbacks=[ke.ExpanderPruningCallback(), *extra_callbacks])


def save_state(model, history, path):
    layer = model.layers[0]
    state = {f"mask{i}": mask.numpy() for i, (_, mask, _) in enumerate(layer.pruning_vars)}
    state.update(step=layer.pruning_step.numpy(), stopped=layer.expansion_stopped.numpy(),
                 cap=layer.expansion_sparsity_cap.numpy(), loss=history.history["loss"][-1],
                 sparsity=history.history["sparsity/rnn"][-1],
                 delta_r=history.history["min_delta_r/rnn"][-1])
    for i, (_, mask, _) in enumerate(layer.pruning_vars):
        replicas = getattr(mask, "values", (mask,))
        state[f"replicas{i}"] = np.stack([np.asarray(r.numpy()) for r in replicas])
    np.savez(path, **state)


class TFCheckpoint(tf_keras.callbacks.Callback):
    """Writes a tf.train.Checkpoint of model and optimizer at every epoch end."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer).write(self.prefix)


def main(argv):
    command = argv[0]
    if command == "multiworker":  # the strategy must exist before any other TensorFlow call
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            model = build()
        save_state(model, fit(model, 0, EPOCHS), argv[1])
        return
    tf.config.experimental.enable_op_determinism()
    if command == "full":
        model = build()
        save_state(model, fit(model, 0, EPOCHS), argv[1])
    elif command == "first":
        checkpoint, out = argv[1], argv[2]
        saver = tf_keras.callbacks.ModelCheckpoint(checkpoint) if checkpoint.endswith(".keras") \
            else TFCheckpoint(checkpoint)
        model = build()
        save_state(model, fit(model, 0, EPOCHS // 2, [saver]), out)
    elif command == "resume":
        checkpoint, out = argv[1], argv[2]
        if checkpoint.endswith(".keras"):
            model = ke.load_model(checkpoint)
        else:
            model = build()
            model.build((None, 6, 8))
            model.optimizer.build(model.trainable_variables)
            tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(checkpoint).assert_consumed()
        save_state(model, fit(model, EPOCHS // 2, EPOCHS), out)
    elif command == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = build()
        save_state(model, fit(model, 0, EPOCHS), argv[1])
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
