"""No silent wrong results: every path that used to finish with a wrong or meaningless result, or a raw traceback,
now fails loudly with a one-line error (or does the right thing). Each test is named after the behaviour; the
bad-input table of docs/reliability.md lists them."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras_expander as ke
from keras_expander import cli
from keras_expander.files import staged_folder
from keras_expander.frameworks import tf_keras
from keras_expander.tflite import export

STEPS, FEATURES = 6, 5


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, STEPS, FEATURES)).astype("float32")
    return x, (x[:, :, 0].sum(axis=1) > 0).astype("int64")


def lstm_model(extra_layers=()):
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([tf_keras.Input((STEPS, FEATURES)), *extra_layers, tf_keras.layers.LSTM(8, name="lstm"),
                                tf_keras.layers.Dense(2)])


def pruned(end_step=4, model=None):
    schedule = ke.ExpanderPruningSchedule(final_sparsity=0.5, begin_step=0, end_step=end_step, frequency=1,
                                          stop_rule="hold")
    result = ke.prune_expander(model or lstm_model(), schedule)
    result.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return result


def test_second_fit_without_the_callback_raises_instead_of_freezing_masks():
    model = pruned()
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[ke.ExpanderPruningCallback()], verbose=0)
    with pytest.raises(RuntimeError, match="without ExpanderPruningCallback"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_callback_on_the_unwrapped_model_raises():
    model = lstm_model()
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    with pytest.raises(ValueError, match="found no pruned layer"):
        model.fit(x, y, epochs=1, callbacks=[ke.ExpanderPruningCallback()], verbose=0)


def test_schedule_that_ends_after_training_is_reported_at_the_end_of_fit():
    model = pruned(end_step=2000)  # 4 batches of training: the target is never reached
    x, y = data()
    with pytest.warns(UserWarning, match="before the schedule's end_step 2000.*optimizer steps"):
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[ke.ExpanderPruningCallback()], verbose=0)


def test_recurrent_layers_left_dense_are_named_in_a_warning():
    model = lstm_model([tf_keras.layers.RNN([tf_keras.layers.LSTMCell(4), tf_keras.layers.LSTMCell(3)],
                                            return_sequences=True, name="stacked")])
    with pytest.warns(UserWarning, match=r"left these recurrent layers dense.*'stacked' \(RNN: .*StackedRNNCells"):
        pruned(model=model)


def test_unbuilt_model_is_refused_when_wrapped():
    unbuilt = tf_keras.Sequential([tf_keras.layers.LSTM(8), tf_keras.layers.Dense(2)])
    schedule = ke.ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, end_step=10, frequency=1)
    with pytest.raises(ValueError, match="is not built"):
        ke.prune_expander(unbuilt, schedule)


def test_layer_names_given_as_a_string_are_not_split_into_characters():
    schedule = ke.ExpanderPruningSchedule(stop_rule="hold", final_sparsity=0.5, end_step=10, frequency=1)
    with pytest.raises(TypeError, match=r"pass layers=\['lstm'\]"):
        ke.prune_expander(lstm_model(), schedule, layers="lstm")


def test_numpy_scalars_are_accepted_as_schedule_numbers():
    schedule = ke.ExpanderPruningSchedule(stop_rule="hold", final_sparsity=np.float32(0.5), begin_step=np.int64(0),
                                          end_step=np.int64(100), frequency=np.int32(10), margin=np.float64(0.1))
    assert schedule.get_config()["config"]["end_step"] == 100 and type(schedule.end_step) is int


@pytest.mark.parametrize("argument", [dict(final_sparsity=float("nan")), dict(margin=float("inf")),
                                      dict(power=float("nan")), dict(end_step=10.5)])
def test_non_finite_or_non_integer_schedule_numbers_are_refused(argument):
    arguments = dict(final_sparsity=0.5, end_step=10) | argument
    with pytest.raises(ValueError, match=f"Argument `{next(iter(argument))}`"):
        ke.ExpanderPruningSchedule(**arguments)


def test_corrupt_keras_file_is_reported_as_corrupt_not_missing(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="is not a Keras .keras archive"):
        ke.load_model(path)


def test_export_refuses_nan_weights(tmp_path):
    model = lstm_model()
    kernel = model.layers[0].cell.kernel.numpy()
    kernel[0, 0] = np.nan
    model.layers[0].cell.kernel.assign(kernel)
    x, y = data(8)
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        export.export_model(model, modes=("float32",), x_test=x, y_test=y, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_to_an_existing_file_is_refused_before_converting(tmp_path, capsys):
    model = lstm_model()
    path = tmp_path / "model.keras"
    model.save(path)
    (tmp_path / "taken").write_text("a file")
    start = time.perf_counter()
    assert cli.main(["export", str(path), "--out", str(tmp_path / "taken")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert time.perf_counter() - start < 15  # refused before the conversion (about 24 s for the demo model)


def test_unwritable_json_path_gives_a_one_line_error(tmp_path, capsys):
    model = lstm_model()
    model.save(tmp_path / "model.keras")
    (tmp_path / "folder").mkdir()
    assert cli.main(["analyze", str(tmp_path / "model.keras"), "--json", str(tmp_path / "folder")]) == 2
    error = capsys.readouterr().err.strip()
    assert "is a folder" in error and len(error.splitlines()) == 1


@pytest.mark.parametrize("argv,expected", [
    (["export", "m.keras", "--representative-samples", "0"], "must be an integer >= 1"),
    (["export", "m.keras", "--test-samples", "-1"], "must be an integer >= 0"),
    (["export", "m.keras", "--ram-kib", "nan"], "must be a finite number > 0"),
    (["firmware", "m.tflite", "--snr-db", "inf"], "must be a finite number"),
])
def test_bad_counts_and_sizes_on_the_command_line_are_one_line_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_cli_has_version_and_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith("keras-expander ")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["export", "--help"])
    text = capsys.readouterr().out
    assert "(default: export_out)" in text and "full integer" in text


def test_staged_folder_leaves_the_old_folder_untouched_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(out) as staging:
            (open(os.path.join(staging, "report.json"), "w")).write("new, half written")
            raise RuntimeError("conversion failed")
    assert os.listdir(out) == ["report.json"] and (out / "report.json").read_text() == "old"
    assert [name for name in os.listdir(tmp_path) if name != "out"] == []


KILL_SCRIPT = """
import sys
from keras_expander.tflite import export
from keras_expander.frameworks import tf_keras
import numpy as np
model = tf_keras.models.load_model(sys.argv[1])
x = np.random.default_rng(0).normal(size=(16, 6, 5)).astype("float32")
export.export_model(model, modes=("float32", "int8"), x_test=x, y_test=np.zeros(16, int), representative_data=x,
                    out_dir=sys.argv[2], print_fn=lambda line: print(line, flush=True))
print("EXPORT DONE", flush=True)
"""


# One kill point by default (the second conversion: a staged folder already holds files); all three with -m slow.
@pytest.mark.parametrize("kill_after", [pytest.param("converting", marks=pytest.mark.slow),
                                        pytest.param("searching the smallest", marks=pytest.mark.slow),
                                        "[int8] converting"])
def test_export_folder_is_complete_or_untouched_after_kill_9(tmp_path, kill_after):
    model_path = tmp_path / "model.keras"
    lstm_model().save(model_path)
    out = tmp_path / "export"
    out.mkdir()
    (out / "report.json").write_text("the previous export")
    script = tmp_path / "run_export.py"
    script.write_text(KILL_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(model_path), str(out)], stdout=subprocess.PIPE,
                               text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    for line in process.stdout:
        if kill_after in line:
            time.sleep(1.0)
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert os.listdir(out) == ["report.json"] and (out / "report.json").read_text() == "the previous export"
    time.sleep(1.0)  # the converter subprocess dies with its parent
    children = subprocess.run(["pgrep", "-f", f"keras_expander.tflite.export .*{tmp_path}"], capture_output=True,
                              text=True)
    assert children.stdout.strip() == ""
    # The next export cleans the killed run's staging folder and replaces the old folder as a whole.
    x, y = data(8)
    export.export_model(tf_keras.models.load_model(model_path), modes=("float32",), x_test=x, y_test=y, out_dir=out)
    assert sorted(os.listdir(out)) == ["float32.tflite", "model_data.cc", "model_data.h", "model_op_resolver.h",
                                       "report.json"]
    assert [name for name in os.listdir(tmp_path) if name.startswith(".export")] == []


def test_fit_with_the_callback_hides_only_the_expected_slow_hook_warning():
    import logging

    from tensorflow.python.platform import tf_logging

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("tensorflow").addHandler(handler)
    slow = "Callback method `on_train_batch_begin` is slow compared to the batch time"

    class Emit(tf_keras.callbacks.Callback):  # what tf_keras logs when a pruning step outlasts a batch
        def on_train_batch_end(self, batch, logs=None):
            tf_logging.warning(slow)
            tf_logging.warning("some other warning")

    try:
        x, y = data()
        pruned().fit(x, y, batch_size=16, epochs=1, callbacks=[ke.ExpanderPruningCallback(), Emit()], verbose=0)
        assert slow not in seen and "some other warning" in seen
        tf_logging.warning(slow)  # outside our fit it is not hidden
        assert slow in seen
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)


def test_subclassed_model_is_pruned_stripped_and_exported_by_the_route_its_message_gives(tmp_path):
    class Classifier(tf_keras.Model):
        def __init__(self, rnn):
            super().__init__(name="classifier")
            self.rnn, self.head = rnn, tf_keras.layers.Dense(2, name="head")

        def call(self, inputs):
            return self.head(self.rnn(inputs))

    def follow(message, model):  # runs the code the message gives, as a user would paste it
        namespace = {"keras": tf_keras, "model": model, "timesteps": STEPS, "features": FEATURES}
        exec(message.split("instead (it shares their weights, and strip_pruning and export work on it): ")[1][:-1],
             namespace)
        return namespace["model"]

    x, y = data()
    subclassed = Classifier(tf_keras.layers.LSTM(8, name="lstm"))
    subclassed(x[:1])
    with pytest.raises(TypeError, match="subclassed model 'classifier' \\(Classifier\\) cannot be cloned") as error:
        pruned(model=subclassed)
    with pytest.raises(ValueError, match="of export must be a Sequential or functional model"):
        export.export_model(subclassed, modes=("float32",), x_test=x[:8], y_test=y[:8], out_dir=tmp_path / "out")
    model = pruned(model=follow(str(error.value), subclassed))
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[ke.ExpanderPruningCallback()], verbose=0)
    (report,) = export.export_model(model, modes=("float32",), x_test=x[:8], y_test=y[:8], out_dir=tmp_path / "out")
    assert report.nonzero_weights < report.total_weights and report.max_abs_diff_tflm_keras <= 1e-5
    # A subclassed model whose layers were wrapped one by one (what the message used to advise) strips the same way.
    schedule = ke.ExpanderPruningSchedule(final_sparsity=0.5, end_step=4, frequency=1, stop_rule="hold")
    wrapped = Classifier(ke.prune_expander(tf_keras.layers.LSTM(8, name="lstm"), schedule))
    wrapped(x[:1])
    with pytest.raises(TypeError, match="of strip_pruning must be a Sequential or functional model") as error:
        ke.strip_pruning(wrapped)
    kernel = ke.strip_pruning(follow(str(error.value), wrapped)).get_layer("lstm").cell.kernel.numpy()
    assert kernel.shape == (FEATURES, 32)
