"""Users' own data: the standard Speech Commands layouts, any labelled audio folder, and export with your own arrays.

Every folder here is written by the test with the `wave` module; nothing touches the network.
"""

import json
import math
import wave

import numpy as np
import pytest
from scipy import signal

from keras_expander import cli, datasets
from keras_expander.frameworks import tf_keras

OTHER_WORDS = ("bed", "cat")  # words outside the ten commands: the _unknown_ class
SPEAKERS = tuple(f"{i:08x}" for i in range(6))


def write_wav(path, samples, rate=16000):
    """int16 samples of shape (frames,) or (frames, channels) as a 16-bit PCM wav."""
    samples = np.asarray(samples, np.int16)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as stream:
        stream.setnchannels(channels)
        stream.setsampwidth(2)
        stream.setframerate(rate)
        stream.writeframes(samples.astype("<i2").tobytes())


def tone(seed, frames=16000):
    return (np.random.default_rng(seed).normal(0, 3000, frames)).clip(-32768, 32767).astype(np.int16)


def standard_layout(root, words=datasets.SPEECH_COMMAND_WORDS + OTHER_WORDS, noise_seconds=(30, 20)):
    """The v0.02 release layout: <word>/<speaker>_nohash_0.wav, _background_noise_/, the official lists
    (speaker 0's clips are listed for validation, speaker 1's for testing)."""
    for w, word in enumerate(words):
        for s, speaker in enumerate(SPEAKERS):
            write_wav(root / word / f"{speaker}_nohash_0.wav", tone(100 * w + s))
    for n, seconds in enumerate(noise_seconds):
        write_wav(root / datasets.BACKGROUND_NOISE / f"noise_{n}.wav", tone(10_000 + n, seconds * 16000))
    (root / "validation_list.txt").write_text("".join(f"{word}/{SPEAKERS[0]}_nohash_0.wav\n" for word in words))
    (root / "testing_list.txt").write_text("".join(f"{word}/{SPEAKERS[1]}_nohash_0.wav\n" for word in words))
    return root


def test_standard_layout_follows_the_official_lists_and_the_12_class_protocol(tmp_path):
    data = datasets.speech_commands(standard_layout(tmp_path), unknown_percent=20.0, silence_percent=30.0)
    assert data["layout"] == "standard" and data["labels"] == datasets.SPEECH_LABELS
    per_split_speakers = {"validation": 1, "test": 1, "train": len(SPEAKERS) - 2}
    for split, speakers in per_split_speakers.items():
        counts = data["counts"][split]
        known = 10 * speakers
        assert all(counts[word] == speakers for word in datasets.SPEECH_COMMAND_WORDS)
        # ceil(20 % of the command clips) unknown clips, at most the other words' clips of the split
        assert counts["_unknown_"] == min(math.ceil(0.2 * known), len(OTHER_WORDS) * speakers)
        assert counts["_silence_"] == math.ceil(0.3 * known)
        x, y = data[split]
        assert x.shape == (sum(counts.values()), 49, 40) and np.isfinite(x).all()
        assert np.bincount(y, minlength=12).tolist() == [counts[label] for label in datasets.SPEECH_LABELS]
    # the official lists decide validation and test: speaker 0 only in validation, speaker 1 only in test
    speakers = data["speakers"]
    spoken = {split: set(speakers[split]) - {s for s in speakers[split] if s.startswith("_background")}
              for split in datasets.SPLITS}
    assert spoken["validation"] == {SPEAKERS[0]} and spoken["test"] == {SPEAKERS[1]}
    assert spoken["train"] == set(SPEAKERS[2:])


def test_silence_slices_are_one_second_of_the_splits_own_share_of_the_recordings():
    recording = np.arange(50_000, dtype=np.int64).astype(np.int16)  # every sample tells its position
    for split, (low, high) in datasets._NOISE_SPAN.items():
        slices = datasets._noise_slices([recording], split, 20, np.random.default_rng(0))
        begin, end = int(len(recording) * low), int(len(recording) * high)
        if end - begin < 16000:
            assert slices is None  # validation and test shares are 5,000 samples: no one-second slice
            continue
        assert slices.shape == (20, 16000)
        starts = slices[:, 0].astype(np.int64)
        assert (starts >= begin).all() and (starts + 16000 <= end).all()
        assert all(np.array_equal(s, recording[start: start + 16000]) for s, start in zip(slices, starts))


def test_v001_layout_of_30_words_maps_the_20_other_words_to_unknown(tmp_path):
    others = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
              "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
    data = datasets.speech_commands(standard_layout(tmp_path, datasets.SPEECH_COMMAND_WORDS + others),
                                    unknown_percent=100.0)
    unknown = datasets.SPEECH_LABELS.index("_unknown_")
    assert data["counts"]["train"]["_unknown_"] == 10 * (len(SPEAKERS) - 2)  # 100 % of the command clips
    assert (data["train"][1] == unknown).sum() == data["counts"]["train"]["_unknown_"]


@pytest.mark.parametrize("damage, says", [
    (lambda root: (root / "validation_list.txt").unlink(), "validation_list.txt"),
    (lambda root: [p.unlink() for p in (root / datasets.BACKGROUND_NOISE).glob("*.wav")], "_silence_"),
    (lambda root: [p.unlink() for word in OTHER_WORDS for p in (root / word).glob("*.wav")], "_unknown_"),
    (lambda root: [p.unlink() for p in (root / "stop").glob("*.wav")], "stop"),
], ids=["no_official_list", "no_background_noise", "no_other_words", "empty_command_word"])
def test_folder_in_no_known_layout_or_with_an_empty_class_is_refused(tmp_path, damage, says):
    damage(standard_layout(tmp_path))
    with pytest.raises(datasets.DataNotFoundError) as error:
        datasets.speech_commands(tmp_path)
    message = str(error.value)
    assert says in message and str(tmp_path) in message and "\n" not in message


def test_8_khz_clip_is_resampled_as_scipy_does(tmp_path):
    samples = tone(1, 8000)
    write_wav(tmp_path / "a.wav", samples, rate=8000)
    expected = np.rint(signal.resample_poly(samples.astype(np.float64), 2, 1)).clip(-32768, 32767)
    assert np.array_equal(datasets.read_audio(tmp_path / "a.wav"), expected.astype(np.int16))


def test_stereo_clip_is_mixed_down_to_the_mean_of_its_channels(tmp_path):
    left, right = tone(2), tone(3)
    write_wav(tmp_path / "s.wav", np.stack([left, right], axis=1))
    mean = np.rint((left.astype(np.float64) + right) / 2).astype(np.int16)
    assert np.array_equal(datasets.read_audio(tmp_path / "s.wav"), mean)


def wake_word_folder(root, labels=("hey_device", "other", "stop")):
    for k, label in enumerate(labels):
        for s, speaker in enumerate(("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")):
            write_wav(root / label / f"{speaker}_{k}.wav", tone(1000 + 10 * k + s, 12000), rate=22050)
    return root


def test_audio_folder_labels_in_alphanumeric_order_and_speaker_disjoint_splits(tmp_path):
    data = datasets.audio_folder(wake_word_folder(tmp_path), validation_percent=25, test_percent=25)
    assert data["labels"] == ("hey_device", "other", "stop") and data["layout"] == "audio_folder"
    speakers = {split: set(data["speakers"][split]) for split in datasets.SPLITS}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["validation"])
    for split in datasets.SPLITS:
        expected = {speaker for speaker in speakers[split]}
        assert all(datasets.split_of(s, 25, 25) == split for s in expected)
        x = data[split][0]
        assert x.shape[1:] == (49, 40) and len(x) == sum(data["counts"][split].values())
        # every speaker said every label once
        assert all(count == len(speakers[split]) for count in data["counts"][split].values())
    by_file = datasets.audio_folder(tmp_path, split_by="file", validation_percent=25, test_percent=25)
    assert sum(sum(c.values()) for c in by_file["counts"].values()) == 24


@pytest.mark.parametrize("damage, error, says", [
    (lambda root: [p.unlink() for p in (root / "other").glob("*.wav")], datasets.DataNotFoundError, "other"),
    (lambda root: (root / "stop" / "zed_9.wav").write_bytes(b"ID3\x03" + bytes(60)), ValueError, "zed_9.wav"),
], ids=["empty_label", "not_a_wav"])
def test_audio_folder_refuses_empty_labels_and_unreadable_clips(tmp_path, damage, error, says):
    damage(wake_word_folder(tmp_path))
    with pytest.raises(error, match=says):
        datasets.audio_folder(tmp_path, validation_percent=25, test_percent=25)


def test_release_without_background_noise_names_that_folder_and_loads_without_silence(tmp_path):
    import shutil

    shutil.rmtree(standard_layout(tmp_path) / datasets.BACKGROUND_NOISE)
    with pytest.raises(datasets.DataNotFoundError) as error:
        datasets.speech_commands(tmp_path)
    message = str(error.value)
    assert f"without {datasets.BACKGROUND_NOISE}/:" in message and "silence_percent=0" in message
    assert "download" not in message and "list.txt" not in message and "\n" not in message
    data = datasets.speech_commands(tmp_path, silence_percent=0)
    assert data["layout"] == "standard" and data["labels"] == datasets.SPEECH_LABELS
    for split, speakers in {"validation": 1, "test": 1, "train": len(SPEAKERS) - 2}.items():
        counts = data["counts"][split]
        assert counts["_silence_"] == 0 and all(counts[word] == speakers for word in datasets.SPEECH_COMMAND_WORDS)
        assert datasets.SPEECH_LABELS.index("_silence_") not in data[split][1]
    with pytest.raises(datasets.DataNotFoundError, match="nothing to mix in at snr_db=10"):
        datasets.speech_commands(tmp_path, silence_percent=0, snr_db=10.0)


def test_audio_folder_on_a_release_follows_its_official_lists(tmp_path):
    data = datasets.audio_folder(standard_layout(tmp_path))
    words = tuple(sorted(datasets.SPEECH_COMMAND_WORDS + OTHER_WORDS))
    expected = {"validation": {SPEAKERS[0]}, "test": {SPEAKERS[1]}, "train": set(SPEAKERS[2:])}
    for split, speakers in expected.items():
        assert set(data["speakers"][split]) - {"noise"} == speakers
    assert data["labels"] == words and data["split_by"] == "lists"  # _background_noise_/ is not a class
    assert all(count == len(expected[split]) for split in datasets.SPLITS for count in data["counts"][split].values())
    for speaker in SPEAKERS:  # a word the lists do not know would never be validated or tested
        write_wav(tmp_path / "wow" / f"{speaker}_nohash_0.wav", tone(7))
    with pytest.raises(datasets.DataNotFoundError) as error:
        datasets.audio_folder(tmp_path)
    message = str(error.value)
    assert "the validation split with no clip of wow; the test split with no clip of wow" in message
    assert "validation_list.txt and testing_list.txt" in message and "\n" not in message


def label_speaker_folder(root, labels=("down", "go", "up"), speakers=("alice", "bob", "carol", "dave", "erin")):
    """<label>/<label>_<speaker>_0.wav: the text before the first "_" is the label, not the speaker."""
    for k, label in enumerate(labels):
        for s, speaker in enumerate(speakers):
            write_wav(root / label / f"{label}_{speaker}_0.wav", tone(2000 + 10 * k + s))
    return root


def test_audio_folder_refuses_speaker_ids_that_are_the_labels_and_takes_a_speaker_pattern(tmp_path):
    label_speaker_folder(tmp_path)
    with pytest.raises(ValueError) as error:
        datasets.audio_folder(tmp_path)
    message = str(error.value)
    assert "coincide with the labels" in message and "down/ -> 'down'" in message and "\n" not in message
    assert "speaker_pattern" in message and "split_by='file'" in message and "speaker_pattern=None" in message
    data = datasets.audio_folder(tmp_path, speaker_pattern=r"^[^_]+_([^_]+)_")
    speakers = {split: set(data["speakers"][split]) for split in datasets.SPLITS}
    assert set().union(*speakers.values()) == {"alice", "bob", "carol", "dave", "erin"}
    assert not (speakers["train"] & speakers["validation"]) and not (speakers["train"] & speakers["test"])
    assert all(min(data["counts"][split].values()) >= 1 for split in datasets.SPLITS)
    with pytest.raises(ValueError, match=r"finds no speaker in the file name 'down_alice_0.wav'"):
        datasets.audio_folder(tmp_path, speaker_pattern=r"^(\d+)_")


def test_audio_folder_gives_each_split_a_speaker_when_there_are_three(tmp_path):
    # at 10 / 10 % the hash puts all three in training: one moves to validation, one to test
    assert {datasets.split_of(name) for name in ("alice", "bob", "carol")} == {"train"}
    label_speaker_folder(tmp_path, labels=("no", "yes"), speakers=("alice", "bob", "carol"))
    data = datasets.audio_folder(tmp_path, speaker_pattern=r"^[^_]+_([^_]+)_")
    speakers = {split: set(data["speakers"][split]) for split in datasets.SPLITS}
    assert all(len(names) == 1 for names in speakers.values())
    assert set().union(*speakers.values()) == {"alice", "bob", "carol"}
    assert all(count == 1 for split in datasets.SPLITS for count in data["counts"][split].values())
    again = datasets.audio_folder(tmp_path, speaker_pattern=r"^[^_]+_([^_]+)_")
    assert all(set(again["speakers"][split]) == speakers[split] for split in datasets.SPLITS)  # stable


def test_audio_folder_refuses_a_split_without_a_label_that_training_has(tmp_path):
    wake_word_folder(tmp_path)
    (tmp_path / "other" / "heidi_1.wav").unlink()  # heidi is the one validation speaker at 25 / 25 %
    assert datasets.split_of("heidi", 25, 25) == "validation"
    with pytest.raises(datasets.DataNotFoundError) as error:
        datasets.audio_folder(tmp_path, validation_percent=25, test_percent=25)
    message = str(error.value)
    assert "the validation split with no clip of other" in message and "'alice'" in message
    assert "split_by='file'" in message and "\n" not in message


def test_clips_longer_than_one_second_are_cut_with_one_warning(tmp_path):
    import warnings

    for label in ("no", "yes"):
        for speaker in ("alice", "bob", "carol"):
            write_wav(tmp_path / label / f"{speaker}_0.wav", tone(3), rate=22050)  # 16,000 frames: 0.73 s
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_wav(tmp_path / "yes" / "dave_0.wav", tone(4, 22050), rate=22050)  # exactly one second
        datasets.audio_folder(tmp_path, split_by="file")
    assert not [w for w in caught if issubclass(w.category, datasets.LongClipWarning)]
    write_wav(tmp_path / "no" / "erin_0.wav", tone(5, 24000))  # 1.5 s
    write_wav(tmp_path / "yes" / "erin_0.wav", tone(6, 36000))  # 2.25 s
    with pytest.warns(datasets.LongClipWarning) as caught:
        datasets.audio_folder(tmp_path, split_by="file")
    assert len(caught) == 1  # one warning per load, not per split or clip
    message = str(caught[0].message)
    assert "2 clip(s) longer than one second" in message and "2.25 s" in message and str(tmp_path) in message


def test_load_npz_names_both_shapes_and_every_missing_array(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=np.zeros((4, 10, 3)), x_test=np.zeros((2, 10, 3)), y_test=np.array([0, 1]))
    with pytest.raises(ValueError) as error:
        datasets.load_npz(path, (28, 28))
    assert "(10, 3)" in str(error.value) and "(28, 28)" in str(error.value)
    np.savez(path, x_test=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="lacks the array.s. x_train, y_test"):
        datasets.load_npz(path, (28, 28))
    np.savez(path, x_train=np.zeros((4, 28, 28)), x_test=np.zeros((2, 28, 28)), y_test=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="one per x_test sample"):
        datasets.load_npz(path, (28, 28))


def test_cli_export_verifies_and_reports_on_your_own_arrays(tmp_path, capsys):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((12, 5)), tf_keras.layers.LSTM(6), tf_keras.layers.Dense(3)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    rng = np.random.default_rng(0)
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=rng.normal(size=(64, 12, 5)), x_test=rng.normal(size=(17, 12, 5)),
             y_test=rng.integers(0, 3, 17))
    out = tmp_path / "out"
    assert cli.main(["export", path, "--mode", "int8", "--data", str(data), "--test-samples", "0",
                     "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())["reports"][0]
    assert report["samples"] == 17  # verified on x_test of the file, all of it
    np.savez(data, x_train=rng.normal(size=(8, 12, 4)), x_test=rng.normal(size=(4, 12, 4)), y_test=np.zeros(4, int))
    assert cli.main(["export", path, "--data", str(data), "--out", str(tmp_path / "other")]) == 2
    assert "(12, 4)" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_cli_export_of_an_audio_folder_takes_the_speaker_pattern_its_refusal_names(tmp_path, capsys):
    folder = label_speaker_folder(tmp_path / "clips", labels=("no", "yes"))
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((49, 40)), tf_keras.layers.GRU(4), tf_keras.layers.Dense(1)])
    path = str(tmp_path / "wake.keras")
    model.save(path)
    command = ["export", path, "--mode", "float32", "--dataset", "audio_folder", "--data-dir", str(folder),
               "--target", "litert", "--out", str(tmp_path / "out")]
    assert cli.main(command) == 2
    error = capsys.readouterr().err
    assert "coincide with the labels" in error and "--speaker-pattern" in error and "--split-by file" in error
    assert cli.main(command + ["--speaker-pattern", "^[^_]+_([^_]+)_"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())["reports"][0]
    assert report["decision"] == "logit output > 0" and report["samples"] >= 2
