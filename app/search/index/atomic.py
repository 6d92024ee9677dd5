"""Atomic file replacement for shard files.

A shard file is either the previous complete version or the new complete version, never a
mix: the new content goes to a temporary file in the same directory (same filesystem, so
``os.replace`` is an atomic rename), is fsynced, renamed over the target, and then the
directory is fsynced so the rename itself survives a power cut. If the writer raises, the
temporary file is removed and the target is untouched. A process killed mid-write may leave
a ``.<name>.*.tmp`` file behind; it is never read and ``remove_stale_temps`` deletes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

_TMP_SUFFIX = ".tmp"
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Directory fsync is how POSIX makes a rename durable; Windows cannot open directories.
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it atomically replaces ``path``."""
    target = Path(path)
    # Shards hold tenant text: private to the server's user (0700 directories, 0600 files),
    # whatever the process umask and whichever library (faiss, numpy) writes the file.
    target.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    tmp = _temp_path_for(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_path: nothing was written to {tmp}")
        # Flush the data blocks before the rename: otherwise a crash after the rename
        # could expose a renamed-but-empty file.
        _fsync_file(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        # The target was not replaced (os.replace is the last step that can fail before
        # the rename happens); drop the partial temp file and re-raise.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (all or nothing, durable once returned)."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def remove_stale_temps(directory: str | os.PathLike[str]) -> int:
    """Delete temp files left by writers that died mid-write; return how many were removed.

    Only call this when no writer is active in ``directory``.
    """
    removed = 0
    for candidate in Path(directory).glob(f".*{_TMP_SUFFIX}"):
        if not _TMP_NAME.match(candidate.name):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed += 1
    return removed
