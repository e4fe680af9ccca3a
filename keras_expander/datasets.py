"""Data loaders for the paper's sequence tasks (sequential MNIST, sequential CIFAR-10, Speech Commands), offline first.

Each loader reads the original files from a data folder (the `data_dir` argument, else the
``KERAS_EXPANDER_DATA`` environment variable). When a data folder is given but lacks the files, the loader raises
`DataNotFoundError` at once, naming the folder and the missing files: it never falls back to a download. Only when
no data folder is given at all does it take the normal online route (TensorFlow Datasets), and when that fails it
raises `DataNotFoundError` saying why.

Bad input fails loudly instead of giving a wrong result: an unsupported or corrupt file raises `ValueError` naming
the file; a non-finite number or a count that is not a positive integer raises `ValueError` naming the argument
(numpy scalars are accepted wherever a Python number is).

Sequential MNIST, row-wise (Kalra et al., arXiv 2403.11100; docs/METHOD.md section 4): each 28 x 28 image is a
sequence of 28 time steps of 28 features (one pixel row per step), pixels / 255.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import numbers
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

DATA_ENV = "KERAS_EXPANDER_DATA"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class DataNotFoundError(FileNotFoundError):
    """The data set is not in the given data folder, or (no folder given) the online route could not provide it."""


def _shown(value) -> str:
    """`value` as an error message shows it after "Received:": numbers plainly (also numpy scalars), others by repr."""
    return str(value) if isinstance(value, numbers.Number) else repr(value)


def _finite(name: str, value, low: float = -math.inf, high: float = math.inf, unit: str = "") -> float:
    """`value` as a float; a finite real number in [low, high] (Python or numpy scalar, not bool) or ValueError."""
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not (math.isfinite(value) and low <= value <= high)):
        bounds = f" in [{low:g}, {high:g}]" if math.isfinite(low) or math.isfinite(high) else ""
        raise ValueError(f"Argument `{name}` must be a finite number{unit}{bounds}. Received: {name}={_shown(value)}")
    return float(value)


def _integer(name: str, value, low: int = 1) -> int:
    """`value` as an int; an integer >= low (Python or numpy scalar, not bool, not a float) or ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"Argument `{name}` must be {kind}. Received: {name}={_shown(value)}")
    return int(value)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The data folder to read: `data_dir`, else $KERAS_EXPANDER_DATA, else None.

    A folder found here is the only source the loaders read: files missing from it are an error, not a reason to
    download. None (neither is set) is the one case in which the loaders take the online route.

    Args:
        data_dir: Folder holding `mnist/`, `cifar10/`, ... (as in the project's shared/data), or None.

    Returns:
        The folder as a Path, or None when neither is set.

    Raises:
        DataNotFoundError: the given folder (argument or environment variable) does not exist.
    """
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        source = "data_dir" if data_dir is not None else DATA_ENV
        raise DataNotFoundError(f"Data folder {str(path)!r} (from {source}) does not exist.")
    return path


def _online_route(title: str, load, route: str = "tensorflow_datasets"):
    """Runs an online loader, the route taken only when no data folder was given; one error when it fails.

    Args:
        title: Data set name for the message, e.g. "MNIST".
        load: Callable taking no argument: the online route.
        route: Its name for the message.

    Returns:
        What `load()` returns.

    Raises:
        DataNotFoundError: `load()` raised; the message says that no data folder was given and why the route failed.
    """
    try:
        return load()
    except Exception as error:  # any download or preparation failure ends in the same advice
        raise DataNotFoundError(f"{title} is not available: no data folder given (--data-dir or ${DATA_ENV}), and "
                                f"the online route ({route}) failed: {type(error).__name__}: {error}") from error


def _not_in_folder(title: str, root: Path, data_dir, missing: str) -> DataNotFoundError:
    """The error for a data folder that was given but lacks the files: no fall-back to the online route."""
    source = "data_dir" if data_dir is not None else DATA_ENV
    return DataNotFoundError(f"{title} is not in the data folder {root} (from {source}): {missing}. Copy the files "
                             f"there, or give no data folder (no data_dir, ${DATA_ENV} unset) to download it.")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads a (gzipped) IDX file: big-endian header with magic 0x0000080N (uint8 data, N dimensions).

    Args:
        path: `.gz` or plain IDX file.

    Returns:
        uint8 array of the shape given by the header.

    Raises:
        ValueError: a truncated or corrupt `.gz` file, not a uint8 IDX file, or a size that does not match its
            header (truncated file); the message names the file.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}); re-copy it.") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (header {data[:4]!r}, expected magic 0x0000080N): "
                         f"truncated or corrupt; re-copy it.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape):
        raise ValueError(f"{path}: {len(data) - offset} data bytes, header says shape {shape} "
                         f"({math.prod(shape)} bytes): truncated or corrupt; re-copy it.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _mnist_folder(root: Path, data_dir) -> Path:
    """`root/mnist` or `root`, whichever holds the four IDX files; DataNotFoundError naming what is missing."""
    missing = {folder: [name for name in MNIST_FILES.values() if not (folder / name).is_file()]
               for folder in (root / "mnist", root)}
    best = min(missing, key=lambda folder: len(missing[folder]))
    if missing[best]:
        raise _not_in_folder("MNIST", root, data_dir, f"{best} lacks {', '.join(missing[best])} (the four IDX "
                             f"files go in {root / 'mnist'} or {root})")
    return best


def _read_mnist(folder: Path) -> dict[str, np.ndarray]:
    """The four IDX files, checked: images of shape (N, 28, 28) (magic 0x00000803), labels (N,) (0x00000801)."""
    arrays = {}
    for key, name in MNIST_FILES.items():
        path = folder / name
        arrays[key] = array = read_idx(path)
        expected = (28, 28) if key.endswith("images") else ()
        if array.shape[1:] != expected:
            raise ValueError(f"{path}: IDX magic 0x0000080{array.ndim} with shape {array.shape}, expected magic "
                             f"0x0000080{len(expected) + 1} with shape (N{''.join(f', {n}' for n in expected)}"
                             f"{',' if not expected else ''}): corrupt or misnamed; re-copy it.")
    for split in ("train", "test"):
        images, labels = (f"{split}_images", f"{split}_labels")
        if len(arrays[images]) != len(arrays[labels]):
            raise ValueError(f"{folder / MNIST_FILES[images]} holds {len(arrays[images])} images but "
                             f"{folder / MNIST_FILES[labels]} holds {len(arrays[labels])} labels: one of them is "
                             f"truncated or corrupt; re-copy them.")
    return arrays


def _mnist_online() -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds  # imported here: heavy, and only the online route needs it

    splits = {}
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(tfds.load("mnist", split=split, as_supervised=True, batch_size=-1))
        splits[f"{split}_images"], splits[f"{split}_labels"] = images[..., 0], labels
    return splits


def sequential_mnist(data_dir: str | os.PathLike | None = None):
    """Row-wise sequential MNIST: 28 steps x 28 features.

    Args:
        data_dir: Folder with the four IDX files (``mnist/`` below it, or directly in it); default
            $KERAS_EXPANDER_DATA; only without either does TensorFlow Datasets download MNIST.

    Returns:
        ((x_train, y_train), (x_test, y_test)): x float32 of shape (N, 28, 28) in [0, 1] (pixels / 255), y int64 of
        shape (N,) in 0..9; N = 60,000 and 10,000.

    Raises:
        DataNotFoundError: the data folder does not exist or lacks IDX files (the message names them), or no data
            folder was given and the online route failed.
        ValueError: an IDX file is truncated or corrupt, has the wrong magic number or shape, or the image and label
            counts differ (the message names the file).
    """
    root = resolve_data_dir(data_dir)
    if root is not None:
        arrays = _read_mnist(_mnist_folder(root, data_dir))
    else:
        arrays = _online_route("MNIST", _mnist_online)
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        out.append((images.astype(np.float32) / 255.0, labels.astype(np.int64)))
    return tuple(out)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_ARCHIVE = "cifar10_jpeg.tar.gz"


def default_cache_dir() -> Path:
    """Where decoded arrays are cached: $KERAS_EXPANDER_CACHE, else ~/.cache/keras_expander."""
    return Path(os.environ.get("KERAS_EXPANDER_CACHE") or Path.home() / ".cache" / "keras_expander")


def _cached(path: Path, build):
    """Loads arrays from an .npz cache file, or builds them with `build()` and writes the cache atomically."""
    from keras_expander.io_utils import atomic_path

    if path.is_file():
        with np.load(path) as cached:
            return {key: cached[key] for key in cached.files}
    arrays = build()
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            np.savez(stream, **arrays)
    return arrays


def _decode_cifar_archive(archive: Path) -> dict[str, np.ndarray]:
    import io
    import tarfile

    from PIL import Image

    images = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or not parts[2].endswith(".jpg"):
                continue
            split, label, _ = parts
            if split not in images or label not in CIFAR10_CLASSES:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                images[split].append(np.asarray(image.convert("RGB"), dtype=np.uint8))
            labels[split].append(CIFAR10_CLASSES.index(label))
    return {f"{split}_{kind}": np.asarray(values[split], dtype=np.uint8 if kind == "images" else np.int64)
            for split in ("train", "test") for kind, values in (("images", images), ("labels", labels))}


def _cifar_online() -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    arrays = {}
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(tfds.load("cifar10", split=split, as_supervised=True, batch_size=-1))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.int64)
    return arrays


def sequential_cifar10(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None):
    """Sequential CIFAR-10: 32 steps (image rows) x 96 features (32 RGB pixels of the row), pixels / 255.

    Offline, the JPEG archive ``cifar10/cifar10_jpeg.tar.gz`` (layout ``train|test/<class>/NNNN.jpg``) is decoded
    once and cached as an .npz in `cache_dir`. That copy is JPEG quality 75: per-channel means match the original
    to 1e-4, standard deviations are about 0.002 lower, so results are close to, not identical with, results on
    the original pickles.

    Args:
        data_dir: Folder holding ``cifar10/`` (default $KERAS_EXPANDER_DATA); only without either, TensorFlow
            Datasets.
        cache_dir: Folder for the decoded arrays (default `default_cache_dir()`).

    Returns:
        ((x_train, y_train), (x_test, y_test)): x float32 of shape (N, 32, 96) in [0, 1], y int64 in 0..9 in the
        standard class order (airplane ... truck); N = 50,000 and 10,000.

    Raises:
        DataNotFoundError: the data folder does not exist or has no archive (the message names both), or no data
            folder was given and the online route failed.
    """
    root = resolve_data_dir(data_dir)
    if root is not None:
        archive = next((path for path in (root / "cifar10" / CIFAR10_ARCHIVE, root / CIFAR10_ARCHIVE)
                        if path.is_file()), None)
        if archive is None:
            raise _not_in_folder("CIFAR-10", root, data_dir, f"no {CIFAR10_ARCHIVE} in {root / 'cifar10'} or {root}")
        stamp = f"{archive.stat().st_size}_{int(archive.stat().st_mtime)}"
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        arrays = _cached(cache / f"cifar10_{stamp}.npz", lambda: _decode_cifar_archive(archive))
    else:
        arrays = _online_route("CIFAR-10", _cifar_online)
    out = []
    for split in ("train", "test"):
        images = arrays[f"{split}_images"]
        out.append((images.reshape(len(images), 32, 96).astype(np.float32) / 255.0, arrays[f"{split}_labels"]))
    return tuple(out)


SPEECH_LABELS = ("_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_FOLDER = "speech_commands_v0.02_test"
SAMPLE_RATE = 16000
SPLITS = ("train", "validation", "test")
# Clips turned into features at a time: bounds memory on the 85,000-clip online training split.
_FEATURE_CHUNK = 4096


def speaker_of(file_name: str) -> str:
    """Speaker id of a Speech Commands clip: the hash before ``_nohash_``; the file name itself for clips without
    one (the ``_silence_`` background-noise snippets)."""
    match = re.search(r"([0-9a-f]{8})_nohash_", file_name)
    return match.group(1) if match else file_name


def split_of(speaker: str, validation_percent: float = 10.0, test_percent: float = 10.0) -> str:
    """Stable speaker-disjoint split: SHA-1 of the speaker id mod 100, as the official `which_set` does.

    Args:
        speaker: Speaker id from `speaker_of`.
        validation_percent, test_percent: Shares of speakers (%), the rest trains.

    Returns:
        "train", "validation" or "test"; every clip of a speaker gets the same answer.

    Raises:
        ValueError: a share is not a finite number in [0, 100], or the two add up to more than 100.
    """
    validation_percent = _finite("validation_percent", validation_percent, 0, 100)
    test_percent = _finite("test_percent", test_percent, 0, 100)
    if validation_percent + test_percent > 100:
        raise ValueError(f"Arguments `validation_percent` and `test_percent` must add up to at most 100. Received: "
                         f"validation_percent={validation_percent:g}, test_percent={test_percent:g}")
    bucket = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < validation_percent:
        return "validation"
    if bucket < validation_percent + test_percent:
        return "test"
    return "train"


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + g * noise with g chosen so that 10 log10(P_clean / P_(g noise)) = snr_db (power = mean square).

    Args:
        clean, noise: float arrays of the same shape (waveforms).
        snr_db: Signal-to-noise ratio in dB, a finite number.

    Returns:
        The mixture, float32 (not clipped, so the SNR is exact).

    Raises:
        ValueError: `snr_db` is not a finite number, shapes differ, or the noise is silent (its power is 0).
    """
    snr_db = _finite("snr_db", snr_db, unit=" of dB")
    clean = np.asarray(clean, np.float64)
    noise = np.asarray(noise, np.float64)
    if clean.shape != noise.shape:
        raise ValueError(f"Arguments `clean` and `noise` must have the same shape. Received {clean.shape} and "
                         f"{noise.shape}.")
    noise_power = np.mean(noise ** 2)
    if noise_power == 0:
        raise ValueError("Argument `noise` is silent (power 0); it cannot set an SNR.")
    gain = np.sqrt(np.mean(clean ** 2) / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (clean + gain * noise).astype(np.float32)


def _fit_one_second(samples: np.ndarray) -> np.ndarray:
    """int16 samples zero-padded or cut to exactly one second (16,000 samples)."""
    samples = np.asarray(samples, dtype=np.int16).ravel()
    return np.pad(samples, (0, max(0, SAMPLE_RATE - len(samples))))[:SAMPLE_RATE]


_WAVE_FORMATS = {1: "PCM", 3: "float"}  # WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_WAVE_GUID_TAIL = bytes.fromhex("00001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_* after the format tag
_WAV_EXPECTED = f"mono 16-bit PCM at {SAMPLE_RATE} Hz"


def _read_wav(path: Path) -> np.ndarray:
    """One clip as int16 samples cut or padded to one second (`_fit_one_second`); reads mono 16-bit PCM at 16 kHz.

    The RIFF header is parsed here, not by scipy or `wave`: scipy reads stereo as interleaved samples, float as
    silence and 24-bit as wrapped integers, and `wave` refuses float with an obscure message; every format but mono
    16-bit PCM at 16 kHz (also as WAVE_FORMAT_EXTENSIBLE) is refused instead, until resampling and mixdown exist.

    Args:
        path: A ``.wav`` file.

    Returns:
        int16 array of shape (16000,).

    Raises:
        ValueError: not a RIFF/WAVE file, a truncated one, or any other format; the message names the file, the
            format found (e.g. "2 channels, 16-bit PCM, 16000 Hz") and the one expected.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a RIFF/WAVE file (it starts with {data[:4]!r}); expected {_WAV_EXPECTED}: "
                         f"re-copy it or convert it.")
    fmt = samples = None
    position = 12
    while position + 8 <= len(data):
        size = int.from_bytes(data[position + 4: position + 8], "little")
        chunk = data[position + 8: position + 8 + size]
        if data[position: position + 4] == b"fmt ":
            fmt = chunk
        elif data[position: position + 4] == b"data":
            samples = chunk if len(chunk) == size else None
        position += 8 + size + size % 2  # chunks are padded to an even size
    if fmt is None or len(fmt) < 16 or samples is None:
        raise ValueError(f"{path}: no complete fmt and data chunks: truncated or corrupt; re-copy it.")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    kind = tag
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        kind = int.from_bytes(fmt[24:28], "little") if fmt[28:40] == _WAVE_GUID_TAIL else None
    if (kind, channels, bits, rate) != (1, 1, 16, SAMPLE_RATE):
        name = _WAVE_FORMATS.get(kind, f"format {kind if kind is not None else 'unknown'}")
        name += " (WAVE_FORMAT_EXTENSIBLE)" if tag == _WAVE_FORMAT_EXTENSIBLE else ""
        found = f"{channels} channel{'' if channels == 1 else 's'}, {bits}-bit {name}, {rate} Hz"
        raise ValueError(f"{path} is {found}; expected {_WAV_EXPECTED}: convert it first (e.g. "
                         f"`sox IN.wav -c 1 -b 16 -e signed-integer -r {SAMPLE_RATE} OUT.wav`).")
    return _fit_one_second(np.frombuffer(samples, "<i2", count=len(samples) // 2))


def _speech_files(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Clips of the wav folders, split by speaker: split -> {"audio" int16 (N, 16000), "label", "speaker"}.

    Raises:
        DataNotFoundError: the folder holds no clips, or too few speakers to give every split a clip.
        ValueError: a clip is not mono 16-bit PCM at 16 kHz (`_read_wav`).
    """
    clips = {split: {"audio": [], "label": [], "speaker": []} for split in SPLITS}
    for label_index, label in enumerate(SPEECH_LABELS):
        for path in sorted((folder / label).glob("*.wav")):
            speaker = speaker_of(path.name)
            target = clips[split_of(speaker)]
            target["audio"].append(_read_wav(path))
            target["label"].append(label_index)
            target["speaker"].append(speaker)
    total = sum(len(c["label"]) for c in clips.values())
    if total == 0:
        raise DataNotFoundError(f"Speech Commands folder {folder} holds no clips: no <label>/*.wav for any label of "
                                f"{', '.join(SPEECH_LABELS)}. Copy the full {SPEECH_FOLDER} folder there.")
    for split, c in clips.items():
        if not c["label"]:
            speakers = len({speaker for other in clips.values() for speaker in other["speaker"]})
            raise DataNotFoundError(f"Speech Commands folder {folder} gives no clip in the {split} split (only "
                                    f"{total} clip(s) of {speakers} speaker(s), split 80/10/10 % by speaker): copy "
                                    f"the full {SPEECH_FOLDER} folder there (4,890 clips).")
    return {split: {"audio": np.stack(c["audio"]), "label": np.asarray(c["label"], np.int64),
                    "speaker": np.asarray(c["speaker"])} for split, c in clips.items()}


# Label order of the TensorFlow Datasets `speech_commands` builder (its ClassLabel names).
TFDS_SPEECH_LABELS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "_silence_",
                      "_unknown_")


def from_tfds_labels(labels) -> np.ndarray:
    """Maps TensorFlow Datasets `speech_commands` label ids to indices into `SPEECH_LABELS`.

    Args:
        labels: int array of shape (N,) in 0..11, in `TFDS_SPEECH_LABELS` order.

    Returns:
        int64 array of shape (N,) in 0..11, in `SPEECH_LABELS` order.
    """
    mapping = np.asarray([SPEECH_LABELS.index(name) for name in TFDS_SPEECH_LABELS], np.int64)
    return mapping[np.asarray(labels, np.int64)]


def _speech_online() -> dict[str, dict[str, np.ndarray]]:
    """The official v0.02 train / validation / test splits from TensorFlow Datasets (2.4 GB download; needs pydub).

    Those splits are speaker-disjoint by the dataset's own hashing; tfds does not expose speaker ids ("speaker" is
    None).
    """
    import tensorflow_datasets as tfds

    clips = {}
    for split in SPLITS:
        audio, labels = [], []
        for waveform, label in tfds.as_numpy(tfds.load("speech_commands", split=split, as_supervised=True)):
            audio.append(_fit_one_second(waveform))
            labels.append(label)
        clips[split] = {"audio": np.stack(audio), "label": from_tfds_labels(labels), "speaker": None}
    return clips


def log_mel(waveforms: np.ndarray, num_mel_bins: int = 40, frame_length: int = 640, frame_step: int = 320):
    """Log-mel spectrogram frames with tf.signal: 40 ms windows every 20 ms -> 49 frames x 40 bins for 1 s.

    Args:
        waveforms: float32 array of shape (N, 16000), in [-1, 1].
        num_mel_bins: Mel bands (20 Hz to 7.6 kHz).
        frame_length, frame_step: STFT window and hop in samples.

    Returns:
        float32 array of shape (N, 49, num_mel_bins): log(mel magnitude + 1e-6).

    Raises:
        ValueError: `num_mel_bins`, `frame_length` or `frame_step` is not a positive integer.
    """
    num_mel_bins = _integer("num_mel_bins", num_mel_bins)
    frame_length = _integer("frame_length", frame_length)
    frame_step = _integer("frame_step", frame_step)
    from keras_expander.backend import tf

    stft = tf.signal.stft(tf.convert_to_tensor(waveforms, tf.float32), frame_length=frame_length,
                          frame_step=frame_step, fft_length=1024)
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(num_mel_bins, stft.shape[-1], SAMPLE_RATE, 20.0, 7600.0)
    return tf.math.log(tf.tensordot(tf.abs(stft), mel_matrix, 1) + 1e-6).numpy().astype(np.float32)


def speech_commands(data_dir: str | os.PathLike | None = None, snr_db: float | None = None, seed: int = 0):
    """Speech Commands v0.02, 12 classes, as log-mel sequences, split by speaker, optionally with background noise.

    Offline, the only audio is the official v0.02 *test* set (4,890 clips in ``speech_commands_v0.02_test/``); it
    is split by speaker into train / validation / test (80 / 10 / 10 % of speakers, `split_of`), so no speaker
    appears in two splits. ``_silence_`` clips (background noise, no speaker) are split by file name. Without the
    folder, the online route loads the official train / validation / test splits with TensorFlow Datasets
    (speaker-disjoint by the dataset's own hashing; a 2.4 GB download that needs the `pydub` package).

    In every split the ``_silence_`` clips serve both as the silence class and as the noise source: with `snr_db`,
    every other clip gets a seeded random ``_silence_`` clip of its own split mixed in at that SNR (`mix_at_snr`).
    Features are standardised with the training split's per-bin mean and standard deviation.

    Args:
        data_dir: Folder holding ``speech_commands_v0.02_test/`` (default $KERAS_EXPANDER_DATA); only without either,
            TensorFlow Datasets.
        snr_db: Signal-to-noise ratio in dB of the added noise (a finite number), or None for clean audio.
        seed: Seed of the noise choice, an integer >= 0.

    Returns:
        Dict with "train", "validation", "test" -> (x float32 of shape (N, 49, 40), y int64 in 0..11 indexing
        `SPEECH_LABELS`), and "speakers" -> dict split -> array of speaker ids (one per clip; None on the online
        route, whose source does not name speakers).

    Raises:
        ValueError: `snr_db` is not a finite number, `seed` not an integer >= 0, or a clip is not mono 16-bit PCM
            at 16 kHz (the message names the file and both formats).
        DataNotFoundError: the data folder does not exist or has no wav folder, the wav folder holds no clips or too
            few speakers for three splits, a split has no ``_silence_`` clip to mix in at `snr_db`, or no data folder
            was given and the online route failed.
    """
    snr_db = None if snr_db is None else _finite("snr_db", snr_db, unit=" of dB (or None)")
    seed = _integer("seed", seed, low=0)
    root = resolve_data_dir(data_dir)
    folder = None
    if root is not None:
        folder = next((path for path in (root / SPEECH_FOLDER, root) if (path / "yes").is_dir()), None)
        if folder is None:
            raise _not_in_folder("Speech Commands", root, data_dir, f"no {SPEECH_FOLDER}/<label>/*.wav in {root} "
                                 f"(e.g. {root / SPEECH_FOLDER / 'yes'})")
        clips = _speech_files(folder)
    else:
        clips = _online_route("Speech Commands", _speech_online,
                              route="tensorflow_datasets 'speech_commands', needs pydub")
    silence_label = SPEECH_LABELS.index("_silence_")
    for split in SPLITS if snr_db is not None else ():
        if not np.any(clips[split]["label"] == silence_label):
            raise DataNotFoundError(f"Speech Commands ({folder or 'tensorflow_datasets'}) has no _silence_ clips in "
                                    f"the {split} split, so there is no noise to mix in at snr_db={snr_db:g}: add "
                                    f"_silence_/*.wav clips or pass snr_db=None.")
    rng = np.random.default_rng(seed)
    features = {}
    for split in SPLITS:
        silence = clips[split]["label"] == silence_label
        noise_pool = clips[split]["audio"][silence]
        chunks = []
        for begin in range(0, len(silence), _FEATURE_CHUNK):
            chunk = slice(begin, begin + _FEATURE_CHUNK)
            audio = clips[split]["audio"][chunk].astype(np.float32) / 32768.0
            if snr_db is not None:
                for index in np.flatnonzero(~silence[chunk]):
                    noise = noise_pool[rng.integers(len(noise_pool))].astype(np.float32) / 32768.0
                    audio[index] = mix_at_snr(audio[index], noise, snr_db)
            chunks.append(log_mel(audio))
        features[split] = np.concatenate(chunks)
    mean = features["train"].mean(axis=(0, 1))
    std = features["train"].std(axis=(0, 1)) + 1e-6
    out = {split: ((features[split] - mean) / std, clips[split]["label"]) for split in SPLITS}
    out["speakers"] = {split: clips[split]["speaker"] for split in SPLITS}
    return out


DATASETS = ("sequential_mnist", "sequential_cifar10", "speech_commands")


def load_train_test(name: str, data_dir: str | os.PathLike | None = None, snr_db: float | None = None,
                    seed: int = 0):
    """One of the project's data sets by name, as training and test splits.

    Args:
        name: "sequential_mnist", "sequential_cifar10" or "speech_commands".
        data_dir: Offline data folder (default $KERAS_EXPANDER_DATA), see each loader.
        snr_db: Background noise SNR in dB (speech_commands only; None = clean).
        seed: Seed of the noise choice (speech_commands only).

    Returns:
        ((x_train, y_train), (x_test, y_test)) as the loaders return them: x float32 of shape (N, T, F), y int64.
        For speech_commands these are the speaker-disjoint train and test splits (`speech_commands`).

    Raises:
        ValueError: unknown `name`, `snr_db` given for a data set without noise mixing, or bad numbers or files (see
            each loader).
        DataNotFoundError: the data set is not available (see each loader).
    """
    if name not in DATASETS:
        raise ValueError(f"Argument `name` must be one of {DATASETS}. Received: name={name!r}")
    if name == "speech_commands":
        splits = speech_commands(data_dir, snr_db=snr_db, seed=seed)
        return splits["train"], splits["test"]
    if snr_db is not None:
        raise ValueError(f"Argument `snr_db` applies to speech_commands only. Received: snr_db={snr_db} for "
                         f"name={name!r}")
    return (sequential_mnist if name == "sequential_mnist" else sequential_cifar10)(data_dir)
