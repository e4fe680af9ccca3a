"""Data loaders for the paper's sequence tasks, offline first.

Each loader looks for the original files in a data folder (the `data_dir` argument, else the
``KERAS_EXPANDER_DATA`` environment variable) and, when they are absent, takes the normal online route
(TensorFlow Datasets). When neither works it raises `DataNotFoundError` saying where it looked and why the online
route failed.

Sequential MNIST, row-wise (Kalra et al., arXiv 2403.11100; docs/METHOD.md section 4): each 28 x 28 image is a
sequence of 28 time steps of 28 features (one pixel row per step), pixels / 255.
"""

from __future__ import annotations

import gzip
import os
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
    """Neither the offline files nor the online route could provide a data set."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The data folder to read: `data_dir`, else $KERAS_EXPANDER_DATA, else None (online route).

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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads a (gzipped) IDX file: big-endian header with magic 0x0000080N (uint8 data, N dimensions).

    Args:
        path: `.gz` or plain IDX file.

    Returns:
        uint8 array of the shape given by the header.

    Raises:
        ValueError: not a uint8 IDX file, or a size that does not match its header (truncated file).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (header {data[:4]!r}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: {len(data) - offset} data bytes, header says shape {shape}.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _mnist_folder(root: Path) -> Path | None:
    for folder in (root / "mnist", root):
        if all((folder / name).is_file() for name in MNIST_FILES.values()):
            return folder
    return None


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
            $KERAS_EXPANDER_DATA; without either, TensorFlow Datasets downloads MNIST.

    Returns:
        ((x_train, y_train), (x_test, y_test)): x float32 of shape (N, 28, 28) in [0, 1] (pixels / 255), y int64 of
        shape (N,) in 0..9; N = 60,000 and 10,000.

    Raises:
        DataNotFoundError: no IDX files in the folder and the online route failed (the message says both).
    """
    root = resolve_data_dir(data_dir)
    folder = _mnist_folder(root) if root is not None else None
    if folder is not None:
        arrays = {key: read_idx(folder / name) for key, name in MNIST_FILES.items()}
    else:
        looked = f"no MNIST IDX files ({', '.join(MNIST_FILES.values())}) in {root} or {root}/mnist" if root else \
            f"no data folder given (--data-dir or ${DATA_ENV})"
        try:
            arrays = _mnist_online()
        except Exception as error:  # any download/preparation failure ends in the same advice
            raise DataNotFoundError(f"MNIST is not available: {looked}, and the online route (tensorflow_datasets) "
                                    f"failed: {type(error).__name__}: {error}") from error
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
        data_dir: Folder holding ``cifar10/`` (default $KERAS_EXPANDER_DATA); without it, TensorFlow Datasets.
        cache_dir: Folder for the decoded arrays (default `default_cache_dir()`).

    Returns:
        ((x_train, y_train), (x_test, y_test)): x float32 of shape (N, 32, 96) in [0, 1], y int64 in 0..9 in the
        standard class order (airplane ... truck); N = 50,000 and 10,000.

    Raises:
        DataNotFoundError: no archive and the online route failed.
    """
    root = resolve_data_dir(data_dir)
    archive = None
    if root is not None:
        archive = next((path for path in (root / "cifar10" / CIFAR10_ARCHIVE, root / CIFAR10_ARCHIVE)
                        if path.is_file()), None)
    if archive is not None:
        stamp = f"{archive.stat().st_size}_{int(archive.stat().st_mtime)}"
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        arrays = _cached(cache / f"cifar10_{stamp}.npz", lambda: _decode_cifar_archive(archive))
    else:
        looked = f"no {CIFAR10_ARCHIVE} in {root} or {root}/cifar10" if root else \
            f"no data folder given (--data-dir or ${DATA_ENV})"
        try:
            arrays = _cifar_online()
        except Exception as error:
            raise DataNotFoundError(f"CIFAR-10 is not available: {looked}, and the online route "
                                    f"(tensorflow_datasets) failed: {type(error).__name__}: {error}") from error
    out = []
    for split in ("train", "test"):
        images = arrays[f"{split}_images"]
        out.append((images.reshape(len(images), 32, 96).astype(np.float32) / 255.0, arrays[f"{split}_labels"]))
    return tuple(out)
