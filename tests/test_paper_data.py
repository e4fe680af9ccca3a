"""Loaders of the paper's data sets and the reproduce_paper sweep (smoke runs are marked slow)."""

import json

import numpy as np
import pytest

from keras_expander import datasets


def test_speaker_of_and_split_are_stable():
    assert datasets.speaker_of("022cd682_nohash_0.wav") == "022cd682"
    assert datasets.speaker_of("backward_0c540988_nohash_0.wav.wav") == "0c540988"
    assert datasets.speaker_of("1024.wav") == "1024.wav"
    assert datasets.split_of("022cd682") == datasets.split_of("022cd682")
    shares = [datasets.split_of(f"{i:08x}") for i in range(2000)]
    assert abs(shares.count("train") / 2000 - 0.8) <= 0.05 and abs(shares.count("test") / 2000 - 0.1) <= 0.03


@pytest.mark.parametrize("snr_db", [20.0, 10.0, 5.0, 0.0, -3.0])
def test_mix_at_snr_hits_the_requested_snr(snr_db):
    rng = np.random.default_rng(0)
    clean = np.sin(np.linspace(0, 400, 16000)) * 0.3
    noise = rng.normal(size=16000) * 0.01
    mixed = datasets.mix_at_snr(clean, noise, snr_db)
    measured = 10 * np.log10(np.mean(clean ** 2) / np.mean((mixed - clean) ** 2))
    assert abs(measured - snr_db) <= 0.5


def test_mix_at_snr_refuses_silent_noise_and_shape_mismatch():
    with pytest.raises(ValueError, match="silent"):
        datasets.mix_at_snr(np.ones(4), np.zeros(4), 10)
    with pytest.raises(ValueError, match="same shape"):
        datasets.mix_at_snr(np.ones(4), np.ones(5), 10)


def test_speech_commands_splits_are_speaker_disjoint_and_balanced(data_dir):
    splits = datasets.speech_commands(data_dir)
    speakers = {split: set(splits["speakers"][split]) for split in datasets.SPLITS}
    assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["validation"]
    assert not speakers["validation"] & speakers["test"]
    total = sum(len(splits[split][1]) for split in datasets.SPLITS)
    assert total == 4890
    x, y = splits["train"]
    assert x.shape[1:] == (49, 40) and x.dtype == np.float32 and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(12))
    counts = np.bincount(y, minlength=12)
    assert counts.min() >= 0.5 * counts.mean()  # 12 classes of about 400 clips each, 80 % of speakers
    assert abs(float(x.mean())) <= 1e-3 and abs(float(x.std()) - 1.0) <= 1e-2  # standardised on train


def test_speech_noise_changes_features_reproducibly(data_dir):
    clean = datasets.speech_commands(data_dir)["test"][0]
    noisy = datasets.speech_commands(data_dir, snr_db=5.0, seed=1)["test"][0]
    again = datasets.speech_commands(data_dir, snr_db=5.0, seed=1)["test"][0]
    assert np.array_equal(noisy, again) and not np.allclose(noisy, clean)


def test_speech_without_a_data_folder_tries_tfds_and_says_both(monkeypatch):
    def offline():
        raise ConnectionError("no network")

    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setattr(datasets, "_speech_online", offline)  # the real route would download 2.4 GB
    with pytest.raises(datasets.DataNotFoundError, match=r"no data folder given.*online route.*no network"):
        datasets.speech_commands()


def test_tfds_speech_labels_map_onto_our_label_order(tmp_path):
    import tensorflow_datasets as tfds

    # the installed builder's own label names (read from its code, no download)
    builder = tfds.builder("speech_commands", data_dir=str(tmp_path))
    assert tuple(builder.info.features["label"].names) == datasets.TFDS_SPEECH_LABELS
    mapped = datasets.from_tfds_labels(np.arange(12))
    assert [datasets.SPEECH_LABELS[i] for i in mapped] == list(datasets.TFDS_SPEECH_LABELS)
    assert sorted(mapped.tolist()) == list(range(12))


def test_sequential_cifar10_returns_a_class_grouped_archive_shuffled_so_every_slice_has_every_class(tmp_path):
    """The archive lists its images class by class; a slice of the split as returned (the last 10 % that Keras'
    validation_split takes) must not be one class, and every image must keep its label."""
    import io
    import tarfile

    from PIL import Image

    archive = tmp_path / "data" / "cifar10" / datasets.CIFAR10_ARCHIVE
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in (("train", 20), ("test", 10)):
            for label in range(10):
                for index in range(count):
                    image = io.BytesIO()
                    Image.new("RGB", (32, 32), (25 * label, 0, 0)).save(image, "JPEG", quality=100)
                    member = tarfile.TarInfo(f"{split}/{datasets.CIFAR10_CLASSES[label]}/{index:04d}.jpg")
                    member.size = image.tell()
                    image.seek(0)
                    tar.addfile(member, image)
    (x_train, y_train), (x_test, y_test) = datasets.sequential_cifar10(tmp_path / "data", cache_dir=tmp_path)
    assert np.array_equal(np.bincount(y_train), np.full(10, 20))
    assert np.array_equal(np.bincount(y_test), np.full(10, 10))
    assert len(set(y_train[-20:].tolist())) >= 5 and len(set(y_test[:10].tolist())) >= 4  # grouped: 1 class each
    for x, y in ((x_train, y_train), (x_test, y_test)):  # red channel 25 * label / 255 (JPEG: within 2 levels)
        assert np.allclose(x[:, :, 0::3].mean(axis=(1, 2)), 25 * y / 255.0, atol=2 / 255)


@pytest.mark.slow  # decodes all 60,000 JPEG images (30 s)
def test_sequential_cifar10_shapes_and_balance(data_dir, tmp_path):
    (x_train, y_train), (x_test, y_test) = datasets.sequential_cifar10(data_dir, cache_dir=tmp_path)
    assert x_train.shape == (50000, 32, 96) and x_test.shape == (10000, 32, 96) and x_train.dtype == np.float32
    assert np.array_equal(np.bincount(y_train), np.full(10, 5000)) and np.array_equal(np.bincount(y_test),
                                                                                      np.full(10, 1000))
    channel_means = x_train.reshape(-1, 32, 32, 3).mean(axis=(0, 1, 2), dtype=np.float64)
    assert np.allclose(channel_means, [0.4914, 0.4822, 0.4465], atol=2e-3)  # published CIFAR-10 means
    cached = datasets.sequential_cifar10(data_dir, cache_dir=tmp_path)  # second call reads the cache
    assert np.array_equal(cached[1][0], x_test)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["mnist_rnn", "mnist_lstm", "cifar10_lstm", "speech_lstm"])
def test_reproduce_paper_smoke_one_q_point(experiment, data_dir, tmp_path, monkeypatch):
    from examples import reproduce_paper

    monkeypatch.setenv("KERAS_EXPANDER_CACHE", str(tmp_path / "cache"))
    argv = ["--experiment", experiment, "--q", "20", "--epochs", "1", "--units", "8", "--train-samples", "256",
            "--data-dir", str(data_dir), "--out", str(tmp_path), "--verbose", "0"]
    assert reproduce_paper.main(argv) == 0
    result = json.loads((tmp_path / f"{experiment}.json").read_text())
    assert {(p["method"], p["q"]) for p in result["points"]} == {("dense", 100.0), ("tfmot", 20.0),
                                                                  ("expander", 20.0), ("random", 20.0)}
    for point in result["points"]:
        assert abs(point["measured_sparsity"] - (1 - point["q"] / 100)) <= 0.005
    assert (tmp_path / f"{experiment}.png").stat().st_size > 0 and (tmp_path / "README.md").exists()
    assert reproduce_paper.main(argv) == 0  # resumable: nothing recomputed
    assert len(json.loads((tmp_path / f"{experiment}.json").read_text())["points"]) == 4
