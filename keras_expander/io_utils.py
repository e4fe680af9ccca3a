"""Atomic file output: a write either completes or leaves the previous file untouched."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path beside `path`; on success renames it onto `path`, on error deletes it.

    Use it for writers that take a file name (Keras `save`, matplotlib `savefig`, the TFLite converter).

    Args:
        path: Final destination. Its folder is created if missing.

    Yields:
        A temporary file name in the same folder (same file system, so the rename is atomic), with the same suffix.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.basename(path)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix="-" + suffix, dir=folder)
    os.close(handle)
    os.unlink(temporary)  # writers such as Keras refuse to overwrite silently; give them a fresh name
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes text or bytes to `path` atomically (temporary file + rename).

    Args:
        path: Destination file.
        data: `str` (written as UTF-8) or `bytes`.
    """
    with atomic_path(path) as temporary:
        mode = "w" if isinstance(data, str) else "wb"
        with open(temporary, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
