"""Backups into the configured backup root (`backup.dir`): named by time, written under a
partial name and renamed when complete, the oldest complete ones beyond `backup.keep`
deleted. The periodic `backup` job (app/jobs/) runs this every `backup.interval_minutes`;
`cairn backup` without a folder does the same once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from app.backup.manifest import MANIFEST
from app.backup.snapshot import BackupFailed, SnapshotState
from app.backup.writer import BackupResult, write_backup
from app.kit.files import private_dir
from app.kit.settings import Settings
from app.models.base import utcnow

PREFIX = "cairn-backup-"
PARTIAL = ".partial-"
LOCK = ".backup.lock"
_NAME = re.compile(rf"^{PREFIX}\d{{8}}T\d{{12}}Z$")
# A partial backup this old belongs to a backup that died; younger ones may still be written.
STALE_PARTIAL_SECONDS = 6 * 3600


def complete_backups(root: Path) -> list[Path]:
    """The complete backups in the root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.iterdir()
        if path.is_dir() and _NAME.match(path.name) and (path / MANIFEST).is_file()
    )


def prune(root: Path, keep: int) -> list[Path]:
    """Delete complete backups beyond the newest `keep`, and stale partial ones; the deleted."""
    doomed = complete_backups(root)[:-keep] if keep > 0 else []
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    doomed += [
        path
        for path in (root.iterdir() if root.is_dir() else [])
        if path.name.startswith(PARTIAL) and path.stat().st_mtime < cutoff
    ]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


class BackupBusy(BackupFailed):
    """Another backup into the same root is running (a slow one outlasting its period)."""


@contextlib.contextmanager
def _one_at_a_time(root: Path) -> Iterator[None]:
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupBusy(f"another backup into {root} is running") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def backup_to_root(
    settings: Settings, *, while_locked: Callable[[SnapshotState], None] | None = None
) -> BackupResult:
    """One backup into `backup.dir`, then retention; BackupBusy while another one into it
    runs. Blocking (a worker thread)."""
    root = settings.backup.dir
    if root is None:
        raise BackupFailed("no backup folder: name one, or set backup.dir (CAIRN_BACKUP__DIR)")
    private_dir(root)
    with _one_at_a_time(root):
        name = f"{PREFIX}{utcnow().strftime('%Y%m%dT%H%M%S%f')}Z"
        partial = root / f"{PARTIAL}{name}"
        earlier = complete_backups(root)
        result = write_backup(
            settings,
            partial,
            previous=earlier[-1] if earlier else None,
            while_locked=while_locked,
        )
        final = root / name
        os.replace(partial, final)
        prune(root, settings.backup.keep)
    return replace(result, path=final)
