"""Atomic output: a file write or a whole output folder either completes or leaves the previous one untouched;
subprocesses that die with their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import sys
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


def die_with_parent() -> None:
    """`preexec_fn` for subprocesses that must not outlive the Python process that started them (Linux: the
    child gets SIGKILL when its parent dies, even by kill -9). Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _exchange(source: str, target: str) -> bool:
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return libc.renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_exchange) == 0


def _remove_abandoned_stages(parent: str, name: str) -> None:
    # Staging folders of runs that were killed (their process is gone); live ones belong to a concurrent run.
    for entry in os.listdir(parent):
        match = re.fullmatch(rf"\.{re.escape(name)}\.staging-(\d+)-\w+", entry)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except PermissionError:
            pass


def check_output_folder(path: str | os.PathLike, argument: str = "out_dir") -> str:
    """Refuses an output folder that cannot be written, before any long work starts.

    Returns:
        The absolute path.

    Raises:
        ValueError: `path` is an existing file, or its parent folder is not writable.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"Argument `{argument}`: {path!r} is an existing file, not a folder; choose a folder path.")
    parent = os.path.dirname(path)
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"Argument `{argument}`: cannot write into {existing!r} (permission denied); choose a "
                         f"writable folder.")
    return path


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike, argument: str = "out_dir"):
    """All-or-nothing output folder: yields a fresh staging folder beside `path`; on success the staging folder
    replaces `path` in one atomic exchange (the old content is then deleted), on error or interruption `path` is
    left untouched. A staging folder left by a killed run is removed by the next run.

    Args:
        path: The output folder (created or replaced).
        argument: Name used in error messages.

    Yields:
        The staging folder's path (same file system as `path`).

    Raises:
        ValueError: from `check_output_folder`.
    """
    path = check_output_folder(path, argument)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    _remove_abandoned_stages(parent, name)
    staging = tempfile.mkdtemp(prefix=f".{name}.staging-{os.getpid()}-", dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not os.path.exists(path):
        os.rename(staging, path)
    elif _exchange(staging, path):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous content
    else:  # no atomic exchange here: a short window in which `path` is missing, never mixed
        previous = staging + ".previous"
        os.rename(path, previous)
        os.rename(staging, path)
        shutil.rmtree(previous, ignore_errors=True)


def check_output_file(path: str | os.PathLike, argument: str = "path") -> str:
    """Refuses an output file that cannot be written, before any long work starts.

    Returns:
        The absolute path.

    Raises:
        ValueError: `path` is an existing folder, or its folder is not writable.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"Argument `{argument}`: {path!r} is a folder; give a file path.")
    check_output_folder(os.path.dirname(path), argument)
    return path
