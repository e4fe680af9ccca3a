"""The analyze command, the MNIST loader, and the main job on a small real subset."""

import gzip
import json
import os

import numpy as np
import pytest

from keras_expander import cli, datasets
from keras_expander.frameworks import tf_keras


def test_cli_analyze_prints_table_and_writes_json(tmp_path, capsys):
    model = tf_keras.Sequential([tf_keras.Input((4, 3)), tf_keras.layers.LSTM(5, name="lstm"),
                                 tf_keras.layers.Dense(2)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    out = tmp_path / "report.json"
    assert cli.main(["analyze", path, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lstm/kernel/i" in printed and "Delta_R" in printed
    payload = json.loads(out.read_text())
    assert len(payload["graphs"]) == 12 and payload["layers"][0]["layer"] == "lstm"


def test_cli_missing_model_exits_2(tmp_path, capsys):
    assert cli.main(["analyze", str(tmp_path / "absent.keras")]) == 2
    assert "absent.keras" in capsys.readouterr().err


def test_read_idx_checks_header_and_size(tmp_path):
    good = tmp_path / "x.gz"
    with gzip.open(good, "wb") as stream:
        stream.write(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6)))
    assert datasets.read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    truncated = tmp_path / "t.gz"
    with gzip.open(truncated, "wb") as stream:
        stream.write(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(5)))
    with pytest.raises(ValueError, match="header says shape"):
        datasets.read_idx(truncated)


def test_sequential_mnist_from_offline_files(data_dir):
    (x_train, y_train), (x_test, y_test) = datasets.sequential_mnist(data_dir)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() == 1.0
    assert y_train.dtype == np.int64 and set(np.unique(y_test)) == set(range(10))
    assert abs(x_train.mean() - 0.1307) <= 1e-3  # the published MNIST pixel mean


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(datasets.DataNotFoundError, match="does not exist"):
        datasets.sequential_mnist(tmp_path / "nowhere")


def test_no_data_folder_and_failing_online_route_names_both(monkeypatch):
    def offline():
        raise ConnectionError("no network")

    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setattr(datasets, "_mnist_online", offline)  # the real route would retry for minutes offline
    with pytest.raises(datasets.DataNotFoundError, match="no data folder given.*online route.*no network"):
        datasets.sequential_mnist()


def test_main_job_on_a_real_subset_writes_every_output(data_dir, tmp_path):
    from examples import sequential_mnist

    out = tmp_path / "run"
    code = sequential_mnist.main(["--units", "16", "--epochs", "1", "--train-samples", "2048", "--final-sparsity",
                                  "0.5", "--data-dir", str(data_dir), "--out", str(out), "--verbose", "0"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 < summary["test_accuracy"] <= 1.0
    # The default stop rule (tolerance) reaches 50 % or is held short of it, saying why.
    sparsity, committed = summary["layers"][0]["sparsity"], [e for e in summary["events"] if e["committed"]]
    assert abs(sparsity - committed[-1]["sparsity"]) <= 1e-6
    assert abs(sparsity - 0.5) <= 0.005 or summary["held"][0]["reason"].startswith(("held-out", "the schedule"))
    for name in ("model.keras", "history.csv", "training.png"):
        assert (out / name).stat().st_size > 0
    assert "sparsity/lstm" in (out / "history.csv").read_text().splitlines()[0]
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]


def test_cli_export_on_real_mnist_fails_when_litert_disagrees_and_says_what_it_verified(data_dir, tmp_path, capsys):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((28, 28)), tf_keras.layers.LSTM(8, name="lstm"),
                                 tf_keras.layers.Dense(10)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    out = tmp_path / "export"
    arguments = ["export", path, "--mode", "int8", "--data-dir", str(data_dir), "--test-samples", "40", "--out",
                 str(out)]
    # Calibrated on 20 images, this untrained LSTM's int8 model predicts no class as Keras does under LiteRT.
    assert cli.main(arguments + ["--representative-samples", "20", "--target", "litert"]) == 1
    error = capsys.readouterr().err
    assert "LiteRT and Keras predict the same class on 0.0 % of 40 test sequences" in error
    assert len(error.strip().splitlines()) == 1 and not out.exists()
    assert cli.main(arguments + ["--representative-samples", "100"]) == 0
    report = json.loads((out / "report.json").read_text())["reports"][0]
    assert report["mode"] == "int8" and report["samples"] == 40 and report["arena_bytes"] > 0
    assert report["argmax_agreement_tflm_keras"] >= 0.95
    printed = capsys.readouterr().out
    assert "accuracy and agreement: on the first 40 of the 10,000 test sequences" in printed
    assert "model fits: the flatbuffer alone against the flash" in printed and "not counted" in printed


def test_cli_export_refuses_dynamic_range_for_tflm(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "m.keras"), "--mode", "dynamic_range"]) == 2
    assert "TFLite Micro cannot run" in capsys.readouterr().err


def test_cli_export_refuses_a_model_that_does_not_fit_the_dataset(data_dir, tmp_path, capsys):
    model = tf_keras.Sequential([tf_keras.Input((49, 40)), tf_keras.layers.LSTM(4), tf_keras.layers.Dense(12)])
    path = str(tmp_path / "speech.keras")
    model.save(path)
    assert cli.main(["export", path, "--data-dir", str(data_dir), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "(49, 40)" in error and "sequential_mnist" in error and "(28, 28)" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the CLI export path is the MNIST test's; this one adds the Speech Commands features (31 s)
def test_cli_export_of_a_speech_commands_model(data_dir, tmp_path):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((49, 40)), tf_keras.layers.LSTM(8), tf_keras.layers.Dense(12)])
    path = str(tmp_path / "speech.keras")
    model.save(path)
    code = cli.main(["export", path, "--mode", "float32", "--dataset", "speech_commands", "--snr-db", "10",
                     "--data-dir", str(data_dir), "--test-samples", "30", "--out", str(tmp_path / "out")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())["reports"][0]
    assert report["samples"] == 30 and report["max_abs_diff_tflm_litert"] <= 1e-5


def test_load_train_test_refuses_unknown_names_and_misplaced_noise():
    with pytest.raises(ValueError, match="name='imagenet'"):
        datasets.load_train_test("imagenet")
    with pytest.raises(ValueError, match="snr_db=10"):
        datasets.load_train_test("sequential_mnist", snr_db=10)
