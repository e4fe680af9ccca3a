"""Data loaders for the paper's sequence tasks (sequential MNIST, sequential CIFAR-10, Speech Commands in its
standard release layouts and our test-set archive) and for users' own data (`audio_folder`, `load_npz`), offline
first.

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

from keras_expander.frameworks import warn_user

DATA_ENV = "KERAS_EXPANDER_DATA"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class DataNotFoundError(FileNotFoundError):
    """The data set is not in the given data folder, or (no folder given) the online route could not provide it."""


class LongClipWarning(UserWarning):
    """A loader cut clips longer than one second (the features' frame of 16,000 samples) to their first second."""


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
CIFAR10_ORDER_SEED = 0  # the fixed order in which the offline archive's images are returned (numpy permutation)


def default_cache_dir() -> Path:
    """Where decoded arrays are cached: $KERAS_EXPANDER_CACHE, else ~/.cache/keras_expander."""
    return Path(os.environ.get("KERAS_EXPANDER_CACHE") or Path.home() / ".cache" / "keras_expander")


def _cached(path: Path, build):
    """Loads arrays from an .npz cache file, or builds them with `build()` and writes the cache atomically."""
    from keras_expander.files import atomic_path

    if path.is_file():
        with np.load(path) as cached:
            return {key: cached[key] for key in cached.files}
    arrays = build()
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
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
    the original pickles. The archive is ordered by class; its images are returned in a fixed shuffled order
    (`CIFAR10_ORDER_SEED`), as the original batches are, so that every slice of a split holds every class.

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
        # The archive groups the images by class: without a shuffle the last 10 % of the training split (Keras'
        # validation_split, or a [-5000:] slice) would be trucks only, and a [:20000] slice four classes.
        shuffled = {}
        for split in ("train", "test"):
            order = np.random.default_rng(CIFAR10_ORDER_SEED).permutation(len(arrays[f"{split}_labels"]))
            shuffled.update({f"{split}_{kind}": arrays[f"{split}_{kind}"][order] for kind in ("images", "labels")})
        arrays = shuffled
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


def _shares(validation_percent, test_percent) -> tuple[float, float]:
    """The two shares (%) as floats: finite numbers in [0, 100] that add up to at most 100, or ValueError."""
    validation_percent = _finite("validation_percent", validation_percent, 0, 100)
    test_percent = _finite("test_percent", test_percent, 0, 100)
    if validation_percent + test_percent > 100:
        raise ValueError(f"Arguments `validation_percent` and `test_percent` must add up to at most 100. Received: "
                         f"validation_percent={validation_percent:g}, test_percent={test_percent:g}")
    return validation_percent, test_percent


def _bucket(key: str) -> int:
    """SHA-1 of the key mod 100: the stable, seed-free position of a speaker or file among the splits."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 100


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
    validation_percent, test_percent = _shares(validation_percent, test_percent)
    bucket = _bucket(speaker)
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
    """Samples (int16 range) as int16, zero-padded or cut to exactly one second (16,000 samples)."""
    samples = np.asarray(samples).astype(np.int16).ravel()
    return np.pad(samples, (0, max(0, SAMPLE_RATE - len(samples))))[:SAMPLE_RATE]


_WAVE_FORMATS = {1: "PCM", 3: "float"}  # WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_WAVE_GUID_TAIL = bytes.fromhex("00001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_* after the format tag
_WAV_EXPECTED = "16-bit PCM (any sample rate, mono or multi-channel)"


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """One clip as 16 kHz mono int16 samples cut or zero-padded to one second (`read_recording`, then cut).

    Args:
        path: A ``.wav`` file.

    Returns:
        int16 array of shape (16000,).

    Raises:
        ValueError: see `read_recording`.
    """
    return _fit_one_second(read_recording(path))


def read_recording(path: str | os.PathLike) -> np.ndarray:
    """A whole wav file as 16 kHz mono int16 samples.

    Reads 16-bit PCM wav files, plain or WAVE_FORMAT_EXTENSIBLE, at any sample rate and channel count:
    multi-channel clips are mixed down to mono (the mean of the channels, rounded half to even), and clips at
    another rate are resampled to 16 kHz with `scipy.signal.resample_poly` (polyphase FIR, Kaiser window), then
    rounded and clipped to int16. Other encodings (8-, 24- or 32-bit integers, float) are refused, naming the file
    and the format found. The RIFF header is read here rather than by `tf.audio.decode_wav`, which refuses
    WAVE_FORMAT_EXTENSIBLE and reports other formats without naming the file; 16-bit samples need no decoding
    beyond their byte order.

    Args:
        path: A ``.wav`` file.

    Returns:
        int16 array of shape (samples at 16 kHz,).

    Raises:
        ValueError: not a RIFF/WAVE file, a truncated one, or an unsupported encoding; the message names the file,
            the format found (e.g. "1 channel, 24-bit PCM, 44100 Hz") and what is read, and how to convert.
    """
    path = Path(path)
    data = path.read_bytes()
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
    if kind != 1 or bits != 16 or channels < 1 or rate < 1:
        name = _WAVE_FORMATS.get(kind, f"format {kind if kind is not None else 'unknown'}")
        name += " (WAVE_FORMAT_EXTENSIBLE)" if tag == _WAVE_FORMAT_EXTENSIBLE else ""
        found = f"{channels} channel{'' if channels == 1 else 's'}, {bits}-bit {name}, {rate} Hz"
        raise ValueError(f"{path} is {found}; expected {_WAV_EXPECTED}: convert it first (e.g. "
                         f"`sox IN.wav -b 16 -e signed-integer OUT.wav`).")
    frames = np.frombuffer(samples, "<i2", count=len(samples) // (2 * channels) * channels)
    audio = frames.reshape(-1, channels).astype(np.float64)
    audio = audio.mean(axis=1) if channels > 1 else audio[:, 0]
    if rate != SAMPLE_RATE:
        from scipy import signal

        divisor = math.gcd(SAMPLE_RATE, rate)
        audio = signal.resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor)
    return np.clip(np.rint(audio), -32768, 32767).astype(np.int16)


def _read_clips(paths: list[Path], cut: list[int]) -> np.ndarray:
    """int16 array of shape (len(paths), 16000), each clip as `read_audio` reads it; appends the length (samples at
    16 kHz) of every clip longer than one second to `cut`, for `_warn_cut`."""
    clips = np.empty((len(paths), SAMPLE_RATE), np.int16)
    for row, path in enumerate(paths):
        samples = read_recording(path)
        if len(samples) > SAMPLE_RATE:
            cut.append(len(samples))
        clips[row] = _fit_one_second(samples)
    return clips


def _warn_cut(folder: Path, cut: list[int]) -> None:
    """One `LongClipWarning` per load for the clips `_read_clips` cut: how many, the longest in seconds, the folder."""
    if cut:
        warn_user(f"{folder}: {len(cut)} clip(s) longer than one second were cut to their first second (the longest "
                  f"lasts {max(cut) / SAMPLE_RATE:.2f} s); the features see one second per clip: trim or split the "
                  f"clips first to keep the rest.", LongClipWarning)


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
    from keras_expander.frameworks import tf

    stft = tf.signal.stft(tf.convert_to_tensor(waveforms, tf.float32), frame_length=frame_length,
                          frame_step=frame_step, fft_length=1024)
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(num_mel_bins, stft.shape[-1], SAMPLE_RATE, 20.0, 7600.0)
    return tf.math.log(tf.tensordot(tf.abs(stft), mel_matrix, 1) + 1e-6).numpy().astype(np.float32)


SPEECH_COMMAND_WORDS = SPEECH_LABELS[2:]
BACKGROUND_NOISE = "_background_noise_"
OFFICIAL_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
# Share of each background-noise recording (by time) that gives each split its silence and noise slices.
_NOISE_SPAN = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}


def _speech_layout(folder: Path, silence_percent: float) -> str | None:
    """"standard" (v0.01 / v0.02 release: word folders, the official lists and, unless `silence_percent` is 0,
    _background_noise_/), "test_archive" (the v0.02 test set: _silence_/ and _unknown_/ folders beside the ten
    words), or None."""
    if not _release_missing(folder, silence_percent):
        return "standard"
    if (folder / "_silence_").is_dir() and (folder / "_unknown_").is_dir():
        return "test_archive"
    return None


def _release_missing(folder: Path, silence_percent: float) -> list[str]:
    """The parts of the standard release layout that `folder` lacks: the official lists, and _background_noise_/
    when the _silence_ class needs it (`silence_percent` > 0)."""
    missing = [name for name in OFFICIAL_LISTS.values() if not (folder / name).is_file()]
    if silence_percent > 0 and not (folder / BACKGROUND_NOISE).is_dir():
        missing.append(f"{BACKGROUND_NOISE}/")
    return missing


def _incomplete_release(folder: Path, silence_percent: float) -> DataNotFoundError:
    """The error for a folder holding part of the standard release layout: names each missing part and what to do,
    and offers no download (the online route gives v0.02, perhaps not the user's release)."""
    missing = _release_missing(folder, silence_percent)
    advice = []
    lists = [name for name in missing if name in OFFICIAL_LISTS.values()]
    if lists:
        advice.append(f"copy {' and '.join(lists)} from the same release there (the lists set the validation and "
                      f"test splits)")
    if f"{BACKGROUND_NOISE}/" in missing:
        advice.append(f"copy {BACKGROUND_NOISE}/ from the same release there (the _silence_ class is sliced from it, "
                      f"silence_percent={silence_percent:g}) or pass silence_percent=0 to load the release without "
                      f"_silence_ clips")
    return DataNotFoundError(f"Speech Commands folder {folder} holds a standard release without "
                             f"{' and '.join(missing)}: {'; '.join(advice)}.")


def _official_lists(folder: Path) -> dict[str, str]:
    """"<word>/<file name>" -> "validation" or "test", from the folder's validation_list.txt and testing_list.txt."""
    listed = {}
    for split, name in OFFICIAL_LISTS.items():
        for line in (folder / name).read_text().split():
            listed[line.strip().replace("\\", "/")] = split
    return listed


def _wav_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.wav")) if folder.is_dir() else []


def _refuse_empty_classes(folder: Path, counts: dict[str, int], layout: str) -> None:
    empty = [label for label, count in counts.items() if count == 0]
    if empty:
        raise DataNotFoundError(f"Speech Commands folder {folder} ({layout} layout) would leave class(es) "
                                f"{', '.join(empty)} empty: no .wav clips for them. Copy the complete data set there.")


def _archive_clips(folder: Path, cut: list[int]) -> tuple[dict, dict]:
    """The v0.02 test-set archive layout: clips split by speaker (`split_of`), _silence_ clips by file name;
    the noise pool of each split is its _silence_ clips. Lengths of cut clips go to `cut` (`_read_clips`)."""
    files = {label: _wav_files(folder / label) for label in SPEECH_LABELS}
    _refuse_empty_classes(folder, {label: len(paths) for label, paths in files.items()}, "test-set archive")
    chosen = {split: {"paths": [], "label": [], "speaker": []} for split in SPLITS}
    for label_index, label in enumerate(SPEECH_LABELS):
        for path in files[label]:
            speaker = speaker_of(path.name)
            target = chosen[split_of(speaker)]
            target["paths"].append(path)
            target["label"].append(label_index)
            target["speaker"].append(speaker)
    clips = {split: {"audio": _read_clips(c["paths"], cut), "label": np.asarray(c["label"], np.int64),
                     "speaker": np.asarray(c["speaker"])} for split, c in chosen.items()}
    silence = SPEECH_LABELS.index("_silence_")
    noise = {split: c["audio"][c["label"] == silence] for split, c in clips.items()}
    return clips, noise


def _noise_slices(recordings: list[np.ndarray], split: str, count: int, rng) -> np.ndarray:
    """`count` one-second slices at seeded random offsets inside the split's share (`_NOISE_SPAN`) of the
    background recordings: int16 array of shape (count, 16000), or None when no recording's share is a second."""
    spans = []
    for recording in recordings:
        begin, end = (int(len(recording) * bound) for bound in _NOISE_SPAN[split])
        if end - begin >= SAMPLE_RATE:
            spans.append((recording, begin, end))
    if not spans:
        return None
    slices = np.empty((count, SAMPLE_RATE), np.int16)
    for index in range(count):
        recording, begin, end = spans[rng.integers(len(spans))]
        offset = int(rng.integers(begin, end - SAMPLE_RATE + 1))
        slices[index] = recording[offset: offset + SAMPLE_RATE]
    return slices


def _standard_clips(folder: Path, unknown_percent: float, silence_percent: float, rng,
                    cut: list[int]) -> tuple[dict, dict]:
    """The v0.01 / v0.02 release layout under the protocol of TensorFlow's speech_commands example
    (input_data.py): the ten words; per split, ceil(unknown_percent % of the split's command clips) _unknown_ clips
    drawn without replacement from the other words, and as many _silence_ clips (silence_percent %) sliced from the
    background-noise recordings (none, and no recording needed, at 0 %); validation and test from the official
    lists. Lengths of cut clips go to `cut` (`_read_clips`)."""
    listed = _official_lists(folder)
    recordings = [read_recording(path) for path in _wav_files(folder / BACKGROUND_NOISE)]
    words = sorted(path.name for path in folder.iterdir()
                   if path.is_dir() and path.name != BACKGROUND_NOISE and not path.name.startswith("."))
    files = {word: _wav_files(folder / word) for word in words}
    unknown_words = [word for word in words if word not in SPEECH_COMMAND_WORDS]
    counts = {word: len(files.get(word, [])) for word in SPEECH_COMMAND_WORDS}
    counts["_unknown_"] = sum(len(files[word]) for word in unknown_words)
    if silence_percent > 0:
        counts["_silence_"] = len(recordings)
    _refuse_empty_classes(folder, counts, "standard")
    by_split = {split: {"known": [], "unknown": []} for split in SPLITS}
    for word in words:
        for path in files[word]:
            split = listed.get(f"{word}/{path.name}", "train")
            by_split[split]["known" if word in SPEECH_COMMAND_WORDS else "unknown"].append(path)
    clips, noise = {}, {}
    unknown_label, silence_label = SPEECH_LABELS.index("_unknown_"), SPEECH_LABELS.index("_silence_")
    for split in SPLITS:
        known = by_split[split]["known"]
        pool = by_split[split]["unknown"]
        unknown = [pool[i] for i in sorted(rng.permutation(len(pool))[:math.ceil(len(known) * unknown_percent / 100)])]
        silence_count = math.ceil(len(known) * silence_percent / 100)
        silence = _noise_slices(recordings, split, max(silence_count, 1), rng)
        if silence is None and silence_count:
            raise DataNotFoundError(f"Speech Commands folder {folder}: no background-noise recording in "
                                    f"{BACKGROUND_NOISE}/ is long enough to give the {split} split one-second slices "
                                    f"(each split uses its own {_NOISE_SPAN[split]} share of every recording).")
        paths = known + unknown
        labels = [SPEECH_LABELS.index(path.parent.name) for path in known] + [unknown_label] * len(unknown)
        silence = silence[:silence_count] if silence_count else np.zeros((0, SAMPLE_RATE), np.int16)
        clips[split] = {"audio": np.concatenate([_read_clips(paths, cut), silence]),
                        "label": np.asarray(labels + [silence_label] * silence_count, np.int64),
                        "speaker": np.asarray([speaker_of(path.name) for path in paths]
                                              + [f"{BACKGROUND_NOISE}_{i}" for i in range(silence_count)])}
        noise[split] = _noise_slices(recordings, split, 256, rng)
    return clips, noise


def _features_by_split(clips: dict, noise: dict, snr_db: float | None, rng, source) -> dict:
    """Log-mel features of every split's clips, with noise from the split's own pool mixed in at `snr_db`,
    standardised with the training split's per-bin mean and standard deviation."""
    features = {}
    for split in SPLITS:
        pool = noise.get(split)
        if snr_db is not None and (pool is None or len(pool) == 0):
            raise DataNotFoundError(f"{source} has no background noise for the {split} split, so there is nothing "
                                    f"to mix in at snr_db={snr_db:g}: add noise clips or pass snr_db=None.")
        silence = clips[split]["label"] == SPEECH_LABELS.index("_silence_") if pool is not None else None
        chunks = []
        for begin in range(0, len(clips[split]["label"]), _FEATURE_CHUNK):
            chunk = slice(begin, begin + _FEATURE_CHUNK)
            audio = clips[split]["audio"][chunk].astype(np.float32) / 32768.0
            if snr_db is not None:
                for index in np.flatnonzero(~silence[chunk]):
                    noise_clip = pool[rng.integers(len(pool))].astype(np.float32) / 32768.0
                    audio[index] = mix_at_snr(audio[index], noise_clip, snr_db)
            chunks.append(log_mel(audio))
        features[split] = np.concatenate(chunks)
    mean = features["train"].mean(axis=(0, 1))
    std = features["train"].std(axis=(0, 1)) + 1e-6
    return {split: (features[split] - mean) / std for split in SPLITS}


def _class_counts(clips: dict, labels) -> dict:
    return {split: {label: int(np.sum(clips[split]["label"] == index)) for index, label in enumerate(labels)}
            for split in SPLITS}


def speech_commands(data_dir: str | os.PathLike | None = None, snr_db: float | None = None, seed: int = 0,
                    unknown_percent: float = 10.0, silence_percent: float = 10.0):
    """Speech Commands, 12 classes (`SPEECH_LABELS`), as log-mel sequences in speaker-disjoint splits, optionally
    with background noise.

    Two on-disk layouts are recognised in the data folder (or its ``speech_commands_v0.02_test/``):

    - *standard*: the v0.01 (30 words) and v0.02 (35 words) releases: one folder per word, ``_background_noise_/``
      (not needed at ``silence_percent=0``), ``validation_list.txt`` and ``testing_list.txt``. The 12-class protocol
      of the Speech Commands paper and TensorFlow's ``speech_commands`` example: the ten command words; per split,
      ceil(`unknown_percent` %) of the split's command clips as ``_unknown_``, drawn without replacement (seeded)
      from all other words; as many (`silence_percent` %) ``_silence_`` clips, one-second slices at seeded random
      offsets of the background-noise recordings. Validation and test follow the official lists (speaker-disjoint
      by construction), the rest trains. Each recording gives its first 80 % (by time) to the training split and
      10 % each to validation and test, for the silence slices and for the noise mixed in at `snr_db`, so no noise
      is shared across splits.
      At ``silence_percent=0`` the ``_silence_`` class holds no clip (the labels stay `SPEECH_LABELS`, so index 0
      is never a target), and a release without ``_background_noise_/`` loads (clean audio only: `snr_db` needs it).
    - *test_archive*: the v0.02 test set we ship (``_silence_/`` and ``_unknown_/`` folders beside the ten words,
      4,890 clips). It has no official split of its own: it is split by speaker into train / validation / test (80 /
      10 / 10 % of speakers, `split_of`); ``_silence_`` clips are split by file name and are the noise source.

    Without a data folder, the online route loads the official v0.02 splits with TensorFlow Datasets (a 2.4 GB
    download that needs the `pydub` package; its silence clips are the noise source). Clips are read with
    `read_audio` (16-bit PCM at any rate, mixed down to mono, resampled to 16 kHz, cut or zero-padded to one
    second); clips longer than one second raise one `LongClipWarning` per load, naming how many and the longest.

    Args:
        data_dir: Folder holding the data set (default $KERAS_EXPANDER_DATA); only without either, TensorFlow
            Datasets.
        snr_db: Signal-to-noise ratio in dB of the added noise (a finite number), or None for clean audio.
        seed: Seed of the noise, unknown-word and silence-slice choices, an integer >= 0.
        unknown_percent, silence_percent: Standard layout: size of the _unknown_ and _silence_ classes per split,
            % of the split's command-word clips (TensorFlow's example uses 10 and 10); ``silence_percent=0``: no
            _silence_ clips, and no ``_background_noise_/`` needed.

    Returns:
        Dict with "train", "validation", "test" -> (x float32 of shape (N, 49, 40), y int64 in 0..11 indexing
        `SPEECH_LABELS`, always all 12 labels; the _silence_ class is empty at ``silence_percent=0``); "speakers" ->
        split -> array of speaker ids (None on the online route); "labels" -> `SPEECH_LABELS`; "layout" ->
        "standard", "test_archive" or "tensorflow_datasets"; "counts" -> split -> label -> clips.

    Raises:
        ValueError: a bad number (non-finite `snr_db`, `seed` not an integer >= 0, a percentage outside [0, 100]),
            or a clip in an unsupported format (`read_audio`; the message names the file).
        DataNotFoundError: the data folder does not exist or matches no known layout, holds a standard release
            without a part it needs (names the part: an official list, or _background_noise_/ at `silence_percent`
            > 0), a class would be empty, a split gets no clip, there is no noise to mix in at `snr_db`, or (no data
            folder) the online route failed.

    Warns:
        LongClipWarning: clips longer than one second were cut.
    """
    snr_db = None if snr_db is None else _finite("snr_db", snr_db, unit=" of dB (or None)")
    seed = _integer("seed", seed, low=0)
    unknown_percent = _finite("unknown_percent", unknown_percent, 0, 100)
    silence_percent = _finite("silence_percent", silence_percent, 0, 100)
    rng = np.random.default_rng(seed)
    root = resolve_data_dir(data_dir)
    if root is not None:
        candidates = [root / SPEECH_FOLDER, root]
        folder = next((path for path in candidates if _speech_layout(path, silence_percent)), None)
        partial = next((path for path in candidates if (path / BACKGROUND_NOISE).is_dir()
                        or any((path / name).is_file() for name in OFFICIAL_LISTS.values())), None)
        if folder is None and partial is not None:
            raise _incomplete_release(partial, silence_percent)
        if folder is None:
            raise _not_in_folder("Speech Commands", root, data_dir,
                                 f"neither {root / SPEECH_FOLDER} nor {root} has a known layout: the standard release "
                                 f"needs <word>/*.wav, {BACKGROUND_NOISE}/, {' and '.join(OFFICIAL_LISTS.values())}; "
                                 f"the v0.02 test-set archive needs <word>/*.wav, _silence_/ and _unknown_/")
        layout, cut = _speech_layout(folder, silence_percent), []
        clips, noise = (_standard_clips(folder, unknown_percent, silence_percent, rng, cut) if layout == "standard"
                        else _archive_clips(folder, cut))
        _warn_cut(folder, cut)
        source = f"Speech Commands folder {folder}"
        for split, c in clips.items():
            if not len(c["label"]):
                raise DataNotFoundError(f"{source} gives no clip in the {split} split ({layout} layout): copy the "
                                        f"complete data set there.")
    else:
        clips = _online_route("Speech Commands", _speech_online,
                              route="tensorflow_datasets 'speech_commands', needs pydub")
        layout, source = "tensorflow_datasets", "Speech Commands (tensorflow_datasets)"
        silence = SPEECH_LABELS.index("_silence_")
        noise = {split: c["audio"][c["label"] == silence] for split, c in clips.items()}
    features = _features_by_split(clips, noise, snr_db, rng, source)
    out = {split: (features[split], clips[split]["label"]) for split in SPLITS}
    out.update(speakers={split: clips[split]["speaker"] for split in SPLITS}, labels=SPEECH_LABELS, layout=layout,
               counts=_class_counts(clips, SPEECH_LABELS))
    return out


def _file_speaker(name: str, pattern: re.Pattern | None = None) -> str | None:
    """Speaker of a clip in a labelled audio folder. With `pattern`: its first group (its whole match when it has no
    group) searched in the file name, None when nothing (or an empty string) matches. Without: the part before
    ``_nohash_`` (Speech Commands naming), else before the first ``_``, else the whole file stem."""
    if pattern is not None:
        match = pattern.search(name)
        return (match.group(1 if pattern.groups else 0) or None) if match else None
    match = re.match(r"(.+?)_nohash_", name)
    return match.group(1) if match else Path(name).stem.split("_")[0]


AUDIO_SPLIT_RULES = ("speaker", "file", "lists")
_PATTERN_EXAMPLE = "r'^[^_]+_([^_]+)_' for <label>_<speaker>_<n>.wav"


def _speaker_pattern(speaker_pattern, split_by) -> re.Pattern | None:
    """`speaker_pattern` compiled (None stays None); ValueError for a bad expression or one given with split_by='file',
    which has no speakers."""
    if speaker_pattern is None:
        return None
    if split_by == "file":
        raise ValueError(f"Argument `speaker_pattern` applies to split_by='speaker' or 'lists', not 'file': drop one "
                         f"of them. Received: speaker_pattern={speaker_pattern!r}, split_by='file'")
    try:
        return re.compile(speaker_pattern)
    except (re.error, TypeError) as error:
        raise ValueError(f"Argument `speaker_pattern` must be a regular expression whose first group is the speaker, "
                         f"e.g. {_PATTERN_EXAMPLE} ({error}). Received: speaker_pattern={speaker_pattern!r}") from error


def _spread(keys, validation_percent: float, test_percent: float) -> dict[str, str]:
    """Split of each key: `split_of`; then each split with a share above 0 % that got no key takes, from the split
    holding the most keys (when it holds two or more), the key with the lowest SHA-1 bucket. So with at least three
    keys every split gets one, still stable and seed-free; with many keys nothing moves."""
    split = {key: split_of(key, validation_percent, test_percent) for key in sorted(set(keys))}
    shares = {"train": 100 - validation_percent - test_percent, "validation": validation_percent,
              "test": test_percent}
    for needy in SPLITS:
        members = {name: sorted((key for key, chosen in split.items() if chosen == name), key=lambda k: (_bucket(k), k))
                   for name in SPLITS}
        donor = max(SPLITS, key=lambda name: len(members[name]))
        if shares[needy] > 0 and not members[needy] and len(members[donor]) > 1:
            split[members[donor][0]] = needy
    return split


def _refuse_label_speakers(folder: Path, speakers: dict[str, set], split_by, speaker_pattern) -> None:
    """Refuses speaker ids that coincide with the labels (one id per label, each id in one label only): a split by
    speaker would then be a split by label, and no split would share a label with training."""
    ids = set().union(*speakers.values())
    if len(speakers) > 1 and len(ids) == len(speakers) and all(len(found) == 1 for found in speakers.values()):
        shown = ", ".join(f"{label}/ -> {next(iter(found))!r}" for label, found in list(speakers.items())[:4])
        raise ValueError(f"Audio folder {folder}: the speaker ids taken from the file names coincide with the labels "
                         f"(one id per label: {shown}{', ...' if len(speakers) > 4 else ''}), so a split by speaker "
                         f"would put each label in one split only: pass speaker_pattern (--speaker-pattern), a regular "
                         f"expression whose first group is the speaker (e.g. {_PATTERN_EXAMPLE}), or split_by='file' "
                         f"(--split-by file). Received: "
                         f"split_by={split_by!r}, speaker_pattern={speaker_pattern!r}")


def _refuse_missing_labels(folder: Path, chosen: dict, labels: tuple, rule: str, advice: str) -> None:
    """Refuses a split without a clip of every label (a class the model never trains on or is never tested on):
    one line naming each such split and its missing labels, then `advice`."""
    lacking = []
    for split, c in chosen.items():
        present = set(c["label"])
        missing = [label for index, label in enumerate(labels) if index not in present]
        if missing and present:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            lacking.append(f"the {split} split with no clip of {', '.join(missing[:5])}{more}")
        elif missing:
            lacking.append(f"no clip in the {split} split")
    if lacking:
        raise DataNotFoundError(f"Audio folder {folder} split by {rule} leaves {'; '.join(lacking)}{advice}.")


def audio_folder(data_dir: str | os.PathLike, split_by: str | None = None, validation_percent: float = 10.0,
                 test_percent: float = 10.0, speaker_pattern: str | re.Pattern | None = None):
    """Any labelled audio folder, ``<data_dir>/<label>/*.wav`` (e.g. your own wake words), as log-mel sequences
    with the same features and return structure as `speech_commands`.

    Labels are the sub-folder names in alphanumeric order, as `keras.utils.audio_dataset_from_directory` infers
    them, except ``_background_noise_/`` (Speech Commands' noise recordings, not a class); label index i is
    ``result["labels"][i]``. Clips are read with `read_audio` (16-bit PCM at any rate, mixed down to mono,
    resampled to 16 kHz with scipy, cut or zero-padded to one second); clips longer than one second raise one
    `LongClipWarning` per load, naming how many and the longest.

    Splits (`split_by`):

    - "lists": the official ``validation_list.txt`` and ``testing_list.txt`` (``<label>/<file name>`` per line) of
      a Speech Commands release choose validation and test, the rest trains; the default when the folder holds
      either list (`validation_percent` and `test_percent` are then not used).
    - "speaker" (the default otherwise): stable and seed-free, SHA-1 of the speaker id mod 100 as `split_of`, so no
      speaker is in two splits. The speaker id is the file name before ``_nohash_``, else before its first ``_``
      (``alice_03.wav`` -> ``alice``), or what `speaker_pattern` picks. When a split with a share above 0 % gets
      no speaker, the speaker with the lowest SHA-1 bucket of the largest split moves there, so with three or more
      speakers every split has one.
    - "file": the same hash of ``<label>/<file name>``, per label, so with three or more clips every label reaches
      every split.

    Every split must hold every label: otherwise the load is refused, naming the splits and labels.
    Features are standardised with the training split's statistics.

    Args:
        data_dir: The folder holding one sub-folder per label.
        split_by: "lists", "speaker", "file", or None (the default): "lists" when the folder holds an official
            list, else "speaker".
        validation_percent, test_percent: Shares (%) of speakers or files for validation and test.
        speaker_pattern: Regular expression searched in each file name whose first group (else its whole match)
            is the speaker id, e.g. ``r"^[^_]+_([^_]+)_"`` for ``<label>_<speaker>_<n>.wav``; None for the default
            rule above.

    Returns:
        Dict with "train", "validation", "test" -> (x float32 of shape (N, 49, 40), y int64 indexing "labels");
        "speakers" -> split -> array of speaker ids ("<label>/<file name>" when split by file); "labels" -> tuple
        of label names; "layout" -> "audio_folder"; "split_by" -> the rule used; "counts" -> split -> label ->
        clips.

    Raises:
        ValueError: `split_by` unknown, bad percentages, a bad `speaker_pattern` or one matching no speaker in a
            file name, speaker ids that coincide with the labels (one id per label), or a clip in an unsupported
            format (naming the file).
        DataNotFoundError: the folder does not exist, has no label sub-folders, a label has no clip, an official
            list is missing beside the other one (split by lists), or a split lacks a label or gets no clip.

    Warns:
        LongClipWarning: clips longer than one second were cut.
    """
    if split_by is not None and split_by not in AUDIO_SPLIT_RULES:
        raise ValueError(f"Argument `split_by` must be one of {AUDIO_SPLIT_RULES} or None. Received: "
                         f"split_by={split_by!r}")
    validation_percent, test_percent = _shares(validation_percent, test_percent)
    if data_dir is None:
        raise ValueError("Argument `data_dir` is required for audio_folder: the folder holding <label>/*.wav.")
    pattern = _speaker_pattern(speaker_pattern, split_by)
    folder = resolve_data_dir(data_dir)
    lists = [name for name in OFFICIAL_LISTS.values() if (folder / name).is_file()]
    rule = split_by or ("lists" if lists else "speaker")
    labels = tuple(sorted(path.name for path in folder.iterdir()
                          if path.is_dir() and not path.name.startswith(".") and path.name != BACKGROUND_NOISE))
    if not labels:
        raise DataNotFoundError(f"Audio folder {folder} has no label sub-folders: expected <label>/*.wav.")
    files = {label: _wav_files(folder / label) for label in labels}
    empty = [label for label in labels if not files[label]]
    if empty:
        raise DataNotFoundError(f"Audio folder {folder}: label folder(s) {', '.join(empty)} hold no .wav clip; add "
                                f"clips or remove the folder(s).")
    keys = {}  # label -> the split key of each of its files: its speaker id, or "<label>/<file name>"
    for label in labels:
        keys[label] = [f"{label}/{path.name}" if rule == "file" else _file_speaker(path.name, pattern)
                       for path in files[label]]
        if None in keys[label]:
            name = files[label][keys[label].index(None)].name
            raise ValueError(f"Argument `speaker_pattern` finds no speaker in the file name {name!r} ({label}/): "
                             f"give a regular expression that matches every clip's name, e.g. {_PATTERN_EXAMPLE}. "
                             f"Received: speaker_pattern={speaker_pattern!r}")
    received = f"split_by={split_by!r}, validation_percent={validation_percent:g}, test_percent={test_percent:g}"
    if rule == "lists":
        if len(lists) < len(OFFICIAL_LISTS):
            missing = [name for name in OFFICIAL_LISTS.values() if name not in lists]
            raise DataNotFoundError(f"Audio folder {folder} holds {', '.join(lists) or 'no official list'} but not "
                                    f"{' and '.join(missing)}: copy it there from the same release, or pass "
                                    f"split_by='speaker' or 'file' to split by hash instead. Received: {received}")
        listed = _official_lists(folder)
        split_for = {f"{label}/{path.name}": listed.get(f"{label}/{path.name}", "train")
                     for label in labels for path in files[label]}
        advice = (f": list clips of those labels in {' and '.join(OFFICIAL_LISTS.values())}, or pass "
                  f"split_by='speaker' to split by speaker hash instead. Received: {received}")
    elif rule == "speaker":
        _refuse_label_speakers(folder, {label: set(keys[label]) for label in labels}, split_by, speaker_pattern)
        spread = _spread([key for label in labels for key in keys[label]], validation_percent, test_percent)
        split_for = {f"{label}/{path.name}": spread[key] for label in labels for path, key in zip(files[label],
                                                                                                keys[label])}
        shown = ", ".join(repr(key) for key in sorted(spread)[:5])
        advice = (f" ({len(spread)} speaker(s) taken from the file names, e.g. {shown}): add clips of those labels "
                  f"by more speakers, change validation_percent / test_percent, give speaker_pattern if those are "
                  f"not the speakers, or pass split_by='file'. Received: {received}")
    else:
        split_for = {}
        for label in labels:
            split_for.update(_spread(keys[label], validation_percent, test_percent))
        advice = (f": give each of those labels at least 3 clips (one per split) or change validation_percent / "
                  f"test_percent. Received: {received}")
    chosen = {split: {"paths": [], "label": [], "speaker": []} for split in SPLITS}
    for index, label in enumerate(labels):
        for path, key in zip(files[label], keys[label]):
            target = chosen[split_for[f"{label}/{path.name}"]]
            target["paths"].append(path)
            target["label"].append(index)
            target["speaker"].append(key)
    _refuse_missing_labels(folder, chosen, labels, rule, advice)
    cut = []
    clips = {split: {"audio": _read_clips(c["paths"], cut), "label": np.asarray(c["label"], np.int64),
                     "speaker": np.asarray(c["speaker"])} for split, c in chosen.items()}
    _warn_cut(folder, cut)
    features = _features_by_split(clips, {}, None, None, f"Audio folder {folder}")
    out = {split: (features[split], clips[split]["label"]) for split in SPLITS}
    out.update(speakers={split: clips[split]["speaker"] for split in SPLITS}, labels=labels, layout="audio_folder",
               split_by=rule, counts=_class_counts(clips, labels))
    return out


DATASETS = ("sequential_mnist", "sequential_cifar10", "speech_commands", "audio_folder")


def load_train_test(name: str, data_dir: str | os.PathLike | None = None, snr_db: float | None = None,
                    seed: int = 0, split_by: str | None = None, speaker_pattern: str | None = None):
    """One of the project's data sets by name, as training and test splits.

    Args:
        name: "sequential_mnist", "sequential_cifar10", "speech_commands" or "audio_folder" (`data_dir` is then
            the labelled audio folder itself).
        data_dir: Offline data folder (default $KERAS_EXPANDER_DATA), see each loader.
        snr_db: Background noise SNR in dB (speech_commands only; None = clean).
        seed: Seed of the noise choice (speech_commands only).
        split_by, speaker_pattern: How audio_folder splits (`audio_folder`); audio_folder only.

    Returns:
        ((x_train, y_train), (x_test, y_test)) as the loaders return them: x float32 of shape (N, T, F), y int64.
        For speech_commands these are the speaker-disjoint train and test splits (`speech_commands`).

    Raises:
        ValueError: unknown `name`, `snr_db` given for a data set without noise mixing, `split_by` or
            `speaker_pattern` given for another data set than audio_folder, or bad numbers or files (see each
            loader).
        DataNotFoundError: the data set is not available (see each loader).
    """
    if name not in DATASETS:
        raise ValueError(f"Argument `name` must be one of {DATASETS}. Received: name={name!r}")
    if name != "audio_folder" and (split_by, speaker_pattern) != (None, None):
        raise ValueError(f"Arguments `split_by` and `speaker_pattern` apply to audio_folder only. Received: "
                         f"split_by={split_by!r}, speaker_pattern={speaker_pattern!r} for name={name!r}")
    if name == "speech_commands":
        splits = speech_commands(data_dir, snr_db=snr_db, seed=seed)
        return splits["train"], splits["test"]
    if name == "audio_folder":
        if snr_db is not None:
            raise ValueError(f"Argument `snr_db` applies to speech_commands only. Received: snr_db={snr_db} for "
                             f"name='audio_folder'")
        splits = audio_folder(data_dir, split_by=split_by, speaker_pattern=speaker_pattern)
        return splits["train"], splits["test"]
    if snr_db is not None:
        raise ValueError(f"Argument `snr_db` applies to speech_commands only. Received: snr_db={snr_db} for "
                         f"name={name!r}")
    return (sequential_mnist if name == "sequential_mnist" else sequential_cifar10)(data_dir)


NPZ_ARRAYS = ("x_train", "x_test", "y_test")


def load_npz(path: str | os.PathLike, input_shape, need=NPZ_ARRAYS):
    """Your own arrays for export and firmware: an ``.npz`` file with ``x_train`` (int8 calibration samples),
    ``x_test`` and ``y_test`` (verification), as written by ``numpy.savez(path, x_train=..., x_test=...,
    y_test=...)``.

    Args:
        path: The ``.npz`` file.
        input_shape: The model's input shape without the batch axis, e.g. (28, 28).
        need: Which of `NPZ_ARRAYS` must be present (the firmware needs only x_test and y_test).

    Returns:
        Dict of the needed arrays: x float32 of shape (N,) + input_shape, y int64 of shape (N,).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not an npz file, a needed array missing (all missing ones are named), a shape that differs
            from the model's (both shapes named), labels of another length than x_test, or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {str(path)!r} does not exist.")
    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a numpy .npz file ({error}); write it with numpy.savez(path, "
                         f"x_train=..., x_test=..., y_test=...).") from error
    with stored:
        missing = [name for name in need if name not in stored.files]
        if missing:
            raise ValueError(f"{path} lacks the array(s) {', '.join(missing)} (it holds "
                             f"{', '.join(stored.files) or 'none'}); write it with numpy.savez(path, "
                             f"{', '.join(f'{name}=...' for name in need)}).")
        arrays = {name: stored[name] for name in need}
    expected = tuple(int(size) for size in input_shape)
    for name, array in arrays.items():
        if name.startswith("x"):
            if tuple(array.shape[1:]) != expected:
                raise ValueError(f"{path}: {name} has samples of shape {tuple(array.shape[1:])} (array shape "
                                 f"{array.shape}), but the model takes inputs of shape {expected}.")
            if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
                raise ValueError(f"{path}: {name} must hold finite numbers (dtype {array.dtype}).")
            arrays[name] = array.astype(np.float32)
    if "y_test" in arrays:
        labels = arrays["y_test"]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(arrays["x_test"]):
            raise ValueError(f"{path}: y_test must be integer class labels of shape ({len(arrays['x_test'])},), one "
                             f"per x_test sample; received {labels.dtype} of shape {labels.shape}.")
        arrays["y_test"] = labels.astype(np.int64)
    if any(len(array) == 0 for array in arrays.values()):
        raise ValueError(f"{path}: {', '.join(name for name, a in arrays.items() if len(a) == 0)} is empty.")
    return arrays

