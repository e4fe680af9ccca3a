"""Bad input to the data loaders fails loudly, with one line naming the file or argument, never a wrong result.

Every test writes small synthetic files into tmp_path and stubs the online routes: none touches the network.
"""

import gzip
import math
import struct
import wave

import numpy as np
import pytest

from keras_expander import datasets

SPEAKER = "0a1b2c3d"
# The GUID tail shared by the WAVE_FORMAT_EXTENSIBLE sub-formats (KSDATAFORMAT_SUBTYPE_PCM, _IEEE_FLOAT).
GUID_TAIL = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def _write_wave(path, channels=1, width=2, rate=16000, frames=1600):
    """A wav file written by the standard `wave` module (PCM integers)."""
    with wave.open(str(path), "wb") as stream:
        stream.setnchannels(channels)
        stream.setsampwidth(width)
        stream.setframerate(rate)
        stream.writeframes(bytes(frames * channels * width))


def _write_raw_wav(path, tag, bits, payload, channels=1, rate=16000, sub_tag=None):
    """A wav file with a hand-written header (float and WAVE_FORMAT_EXTENSIBLE, which `wave` cannot write)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if sub_tag is not None:
        fmt += struct.pack("<HHI", 22, bits, 4) + struct.pack("<I", sub_tag) + GUID_TAIL
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _clip_path(root, label="yes", speaker=SPEAKER):
    folder = root / datasets.SPEECH_FOLDER / label
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{speaker}_nohash_0.wav"


def _float_wav(path):
    _write_raw_wav(path, 3, 32, np.full(1600, 0.5, "<f4").tobytes())


def _extensible_float_wav(path):
    _write_raw_wav(path, 0xFFFE, 32, np.full(1600, 0.5, "<f4").tobytes(), sub_tag=3)


def _extensible_pcm16_stereo_wav(path):
    _write_raw_wav(path, 0xFFFE, 16, np.zeros(3200, "<i2").tobytes(), channels=2, sub_tag=1)


def _not_a_wav(path):
    path.write_bytes(b"ID3\x03" + bytes(60))


@pytest.mark.parametrize("write, found", [
    (_float_wav, "1 channel, 32-bit float, 16000 Hz"),
    (lambda path: _write_wave(path, width=3), "1 channel, 24-bit PCM, 16000 Hz"),
    (lambda path: _write_wave(path, width=1), "1 channel, 8-bit PCM, 16000 Hz"),
    (_extensible_float_wav, "1 channel, 32-bit float (WAVE_FORMAT_EXTENSIBLE), 16000 Hz"),
    (_not_a_wav, "not a RIFF/WAVE file"),
], ids=["float32", "pcm24", "pcm8", "extensible_float", "mp3_named_wav"])
def test_unsupported_wav_is_refused_naming_the_file_and_both_formats(tmp_path, write, found):
    path = _clip_path(tmp_path)
    write(path)
    with pytest.raises(ValueError) as error:
        datasets.read_audio(path)
    message = str(error.value)
    assert str(path) in message and found in message and "16-bit PCM (any sample rate" in message
    assert "\n" not in message


@pytest.mark.parametrize("write", [
    lambda path: _write_raw_wav(path, 1, 16, np.arange(-800, 800, dtype="<i2").tobytes()),
    lambda path: _write_raw_wav(path, 0xFFFE, 16, np.arange(-800, 800, dtype="<i2").tobytes(), sub_tag=1),
], ids=["pcm16", "extensible_pcm16"])
def test_mono_pcm16_wav_is_read_sample_for_sample(tmp_path, write):
    """Guard against refusing too much: plain and WAVE_FORMAT_EXTENSIBLE mono 16-bit PCM are read exactly."""
    path = tmp_path / "clip.wav"
    write(path)
    samples = datasets.read_audio(path)
    assert samples.dtype == np.int16 and samples.shape == (16000,)
    assert np.array_equal(samples[:1600], np.arange(-800, 800)) and not samples[1600:].any()


def _idx(shape, magic_ndim=None, data=None):
    header = bytes([0, 0, 8, len(shape) if magic_ndim is None else magic_ndim])
    header += b"".join(size.to_bytes(4, "big") for size in shape)
    return header + (bytes(math.prod(shape)) if data is None else data)


def _mnist_folder(root):
    folder = root / "mnist"
    folder.mkdir()
    for split in ("train", "test"):
        prefix = "train" if split == "train" else "t10k"
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as stream:
            stream.write(_idx((3, 28, 28)))
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as stream:
            stream.write(_idx((3,)))
    return folder


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-12])


def _garble(path):
    path.write_bytes(b"<html>404 Not Found</html>")


def _labels_as_images(path):
    with gzip.open(path, "wb") as stream:
        stream.write(_idx((3,)))


def _short_data(path):
    with gzip.open(path, "wb") as stream:
        stream.write(_idx((3, 28, 28), data=bytes(2 * 28 * 28)))


def _more_images_than_labels(path):
    with gzip.open(path, "wb") as stream:
        stream.write(_idx((4, 28, 28)))


@pytest.mark.parametrize("corrupt, says", [
    (_truncate, "truncated or corrupt"),
    (_garble, "truncated or corrupt"),
    (_labels_as_images, "magic"),
    (_short_data, "truncated or corrupt"),
    (_more_images_than_labels, "train-labels-idx1-ubyte.gz"),
], ids=["truncated_gz", "not_gzip", "labels_as_images", "short_data", "count_mismatch"])
def test_corrupt_mnist_file_is_refused_naming_the_file(tmp_path, corrupt, says):
    path = _mnist_folder(tmp_path) / "train-images-idx3-ubyte.gz"
    corrupt(path)
    with pytest.raises(ValueError) as error:
        datasets.sequential_mnist(tmp_path)
    message = str(error.value)
    assert str(path) in message and says in message and "re-copy" in message and "\n" not in message


def _speech_clip(root, label, speaker):
    _write_wave(_clip_path(root, label, speaker))


def _speaker_in(split):
    return next(f"{i:08x}" for i in range(1000) if datasets.split_of(f"{i:08x}") == split)


def _archive(root, speakers):
    """The v0.02 test-set archive layout with one clip per (label, speaker)."""
    for label in datasets.SPEECH_LABELS:
        for speaker in speakers(label):
            _speech_clip(root, label, speaker)


def _empty_class(root):
    _archive(root, lambda label: [] if label == "go" else [_speaker_in(s) for s in datasets.SPLITS])


def _one_split_only(root):
    _archive(root, lambda label: [_speaker_in("train")])


def _no_silence_in_a_split(root):
    # _silence_ clips are split by file name: "noise_0" lands in one split only
    _archive(root, lambda label: ["noise_0"] if label == "_silence_" else [_speaker_in(s) for s in datasets.SPLITS])


@pytest.mark.parametrize("fill, snr_db, says", [
    (_empty_class, None, "would leave class(es) go empty"),
    (_one_split_only, None, "no clip in the validation split"),
    (_no_silence_in_a_split, 10.0, "no background noise for the"),
], ids=["empty_class", "one_split_only", "no_noise_for_snr"])
def test_speech_folder_without_clips_is_refused_naming_the_folder(tmp_path, fill, snr_db, says):
    fill(tmp_path)
    with pytest.raises(datasets.DataNotFoundError) as error:
        datasets.speech_commands(tmp_path, snr_db=snr_db)
    message = str(error.value)
    assert str(tmp_path / datasets.SPEECH_FOLDER) in message and says in message and "\n" not in message


@pytest.fixture
def online_routes(monkeypatch):
    """Replaces the three online routes by stubs that record the call (the real ones retry for minutes offline)."""
    calls = []

    def stub(name):
        def load():
            calls.append(name)
            raise ConnectionError("no network")
        return load

    for name in ("_mnist_online", "_cifar_online", "_speech_online"):
        monkeypatch.setattr(datasets, name, stub(name))
    return calls


@pytest.mark.parametrize("loader, names", [
    (datasets.sequential_mnist, ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
    (datasets.sequential_cifar10, ["cifar10_jpeg.tar.gz"]),
    (datasets.speech_commands, [datasets.SPEECH_FOLDER]),
])
@pytest.mark.parametrize("source", ["data_dir", "environment"])
def test_explicit_data_folder_without_files_is_an_error_not_a_download(tmp_path, monkeypatch, online_routes,
                                                                        loader, names, source):
    if source == "data_dir":
        monkeypatch.delenv(datasets.DATA_ENV, raising=False)
        call = lambda: loader(tmp_path)  # noqa: E731
    else:
        monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
        call = loader
    with pytest.raises(datasets.DataNotFoundError) as error:
        call()
    message = str(error.value)
    assert not online_routes, "an explicit data folder must never fall back to the online route"
    assert str(tmp_path) in message and all(name in message for name in names) and "\n" not in message
    assert ("data_dir" if source == "data_dir" else datasets.DATA_ENV) in message


def test_no_data_folder_takes_the_online_route_and_names_it(monkeypatch, online_routes):
    """Guard: with no data folder at all the online route is still taken, and its failure is reported."""
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    with pytest.raises(datasets.DataNotFoundError, match=r"no data folder given.*online route.*no network"):
        datasets.sequential_mnist()
    assert online_routes == ["_mnist_online"]


@pytest.mark.parametrize("call, argument", [
    (lambda root: datasets.speech_commands(root, snr_db=float("nan")), "snr_db=nan"),
    (lambda root: datasets.speech_commands(root, snr_db=np.float32("inf")), "snr_db=inf"),
    (lambda root: datasets.load_train_test("speech_commands", root, snr_db=-math.inf), "snr_db=-inf"),
    (lambda root: datasets.speech_commands(root, snr_db="10"), "snr_db='10'"),
    (lambda root: datasets.speech_commands(root, seed=-1), "seed=-1"),
    (lambda root: datasets.speech_commands(root, seed=1.5), "seed=1.5"),
    (lambda root: datasets.speech_commands(root, seed="0"), "seed='0'"),
    (lambda root: datasets.speech_commands(root, seed=[1, 2]), "seed=[1, 2]"),
    (lambda root: datasets.log_mel(np.zeros((1, 16000), np.float32), num_mel_bins=0), "num_mel_bins=0"),
    (lambda root: datasets.log_mel(np.zeros((1, 16000), np.float32), frame_step=2.5), "frame_step=2.5"),
    (lambda root: datasets.log_mel(np.zeros((1, 16000), np.float32), frame_length=True), "frame_length=True"),
    (lambda root: datasets.mix_at_snr(np.ones(4), np.ones(4), math.nan), "snr_db=nan"),
    (lambda root: datasets.split_of("0a1b2c3d", validation_percent=math.nan), "validation_percent=nan"),
], ids=["snr_nan", "snr_inf_numpy", "snr_minus_inf_by_name", "snr_string", "seed_negative", "seed_float",
        "seed_string", "seed_list", "mel_bins_zero", "frame_step_float", "frame_length_bool", "mix_nan",
        "percent_nan"])
def test_non_finite_or_non_integer_numbers_are_refused_naming_the_argument(tmp_path, online_routes, call,
                                                                           argument):
    with pytest.raises(ValueError) as error:
        call(tmp_path)
    message = str(error.value)
    assert message.startswith("Argument `") and f"Received: {argument}" in message and "\n" not in message
    assert not online_routes
    # numpy scalars are numbers like any other: they get past the checks to the missing-files error
    with pytest.raises(datasets.DataNotFoundError):
        datasets.speech_commands(tmp_path, snr_db=np.float32(10.0), seed=np.int64(3))
    mixed = datasets.mix_at_snr(np.ones(4), np.arange(4.0) - 1.5, np.float32(0.0))
    assert abs(10 * math.log10(1.0 / np.mean((mixed - 1.0) ** 2))) <= 1e-5
