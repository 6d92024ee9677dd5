"""Writing one backup folder: the database dump, the pinned shard files, the blobs the
snapshot names, every tombstone, and last the manifest (app/backup/snapshot.py says how the
files are kept consistent with the database snapshot).

    <backup>/manifest.json
    <backup>/database.sqlite3 | database.pgdump
    <backup>/tombstones.jsonl
    <backup>/indexes/tenant-<t>/<shard files>
    <backup>/files/t<t>/<sha[:2]>/<sha>

Files are copied as bytes: once encryption at rest is on they are ciphertext and stay so.
No key is ever copied: the KEK lives outside the data dir, and the generated development
secrets (.jwt_secret, .audit_secret, .audit_signing_key) are keys too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from app.backup import manifest as manifest_file
from app.backup import tombstone_file
from app.backup.manifest import BackupInvalid, FileEntry, Manifest
from app.backup.snapshot import (
    BackupFailed,
    BlobRef,
    SnapshotState,
    pinned_snapshot,
)
from app.backup.tombstone_file import TombstoneRecord
from app.kit.db import create_blocking_read_engine, is_sqlite
from app.kit.files import PRIVATE_FILE_MODE, private_dir
from app.kit.settings import Settings
from app.kit.storage import ContentStore
from app.models import Document, Tombstone
from app.models.base import utcnow

TOMBSTONES = "tombstones.jsonl"
INDEXES = "indexes"
FILES = "files"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    # Documents whose blob a purge deleted between the snapshot and the copy (a tombstone for
    # each is in the backup).
    purged_meanwhile: int
    # Files hard-linked from the previous backup (the same bytes) instead of copied.
    linked: int = 0


class Copier:
    """Copies files into a backup as bytes (ciphertext stays ciphertext), hashing them on the
    way, fsynced. Given the previous backup, a file whose bytes it already holds under the
    same path is hard-linked from there instead: shard versions and stored files rarely
    change between two scheduled backups, so each backup costs the disk only what changed,
    and each is still complete on its own (deleting one never touches another's files)."""

    def __init__(self, root: Path, previous: Path | None = None) -> None:
        self.root = root
        self.previous = previous
        self.linked = 0
        self._known: dict[str, FileEntry] = {}
        if previous is not None:
            try:
                self._known = {e.path: e for e in manifest_file.read(previous).files}
            except BackupInvalid:
                self.previous = None

    def copy(self, source: Path, target: Path) -> FileEntry:
        relative = target.relative_to(self.root).as_posix()
        # One open file for hashing and copying: a file replaced meanwhile (a new inode) can
        # never mix into what is hashed here.
        with source.open("rb") as handle:
            known = self._known.get(relative)
            if known is not None and self._link(handle, known, target):
                return known
            handle.seek(0)
            return self._write(handle, target, relative)

    def _link(self, handle: BinaryIO, known: FileEntry, target: Path) -> bool:
        """Link the previous backup's file when its bytes and the source's are the same (both
        hashed: a damaged earlier copy is never carried on)."""
        assert self.previous is not None
        earlier = self.previous / known.path
        if _hash(handle) != (known.size, known.sha256):
            return False
        try:
            with earlier.open("rb") as previous:
                if _hash(previous) != (known.size, known.sha256):
                    return False
            private_dir(target.parent)
            os.link(earlier, target)
        except OSError:
            return False  # gone, or no hard links between the two folders: copy instead
        self.linked += 1
        return True

    def _write(self, handle: BinaryIO, target: Path, relative: str) -> FileEntry:
        private_dir(target.parent)
        digest = hashlib.sha256()
        size = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            while block := handle.read(_CHUNK):
                digest.update(block)
                size += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        return FileEntry(relative, size, digest.hexdigest())


def _hash(handle: BinaryIO) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while block := handle.read(_CHUNK):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def _empty_target(target: Path, data_dir: Path) -> None:
    if target.resolve().is_relative_to(data_dir.resolve()):
        raise BackupFailed(
            f"{target} is inside the data dir {data_dir}: a backup there is lost with it"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupFailed(f"{target} is not an empty folder; name a new one")
    private_dir(target)


def _live_tombstones(engine: Engine) -> list[TombstoneRecord]:
    if not inspect(engine).has_table(Tombstone.__tablename__):
        return []  # a database from before revision 0012 has recorded none
    with Session(engine) as session:
        rows = session.scalars(select(Tombstone).order_by(Tombstone.id)).all()
        return [
            TombstoneRecord(
                "user" if row.kind == "user" else "document",
                row.tenant_id,
                row.subject_id,
                row.digest,
                row.recorded_at.isoformat(),
            )
            for row in rows
        ]


def _purged_meanwhile(engine: Engine, blob: BlobRef) -> bool:
    """Whether the document of a blob that has gone is being (or was) purged."""
    with Session(engine) as session:
        status = session.scalar(select(Document.status).where(Document.id == blob.document_id))
    return status is None or status == "purging"


def _copy_blobs(
    state: SnapshotState, store: ContentStore, engine: Engine, copier: Copier
) -> tuple[list[FileEntry], list[TombstoneRecord]]:
    entries: list[FileEntry] = []
    tombstones: list[TombstoneRecord] = []
    copied: set[tuple[int, str]] = set()
    for blob in state.blobs:
        if (blob.tenant_id, blob.sha256) in copied:
            continue  # two documents of a tenant share one stored file
        source = store.path_for(blob.tenant_id, blob.sha256)
        if not source.exists():
            legacy = store.legacy_path_for(blob.sha256)
            source = legacy if legacy.exists() else source
        relative = source.relative_to(store.root)
        try:
            entries.append(copier.copy(source, copier.root / FILES / relative))
            copied.add((blob.tenant_id, blob.sha256))
        except FileNotFoundError:
            if blob.status == "purging":
                continue  # the purge had deleted it before the snapshot
            if not _purged_meanwhile(engine, blob):
                raise BackupFailed(
                    f"the stored file of document {blob.document_id} (tenant {blob.tenant_id}) "
                    "is missing from the data dir"
                ) from None
            tombstones.append(
                tombstone_file.new_record(
                    "document",
                    tenant_id=blob.tenant_id,
                    subject_id=blob.document_id,
                    digest=blob.sha256,
                )
            )
    return entries, tombstones


def write_backup(
    settings: Settings,
    target: Path,
    *,
    previous: Path | None = None,
    while_locked: Callable[[SnapshotState], None] | None = None,
) -> BackupResult:
    """Back up the running deployment into `target` (a new or empty folder); files whose
    bytes the `previous` backup holds are linked from it (Copier). Blocking: call it from a
    worker thread. On failure nothing of the partial backup is left."""
    _empty_target(target, settings.data_dir)
    url = settings.resolved_database_url
    staging = settings.index_dir / f".backup-{uuid.uuid4().hex}"
    engine = create_blocking_read_engine(url)
    try:
        entries: list[FileEntry] = []
        with pinned_snapshot(
            url,
            settings.index_dir,
            staging,
            pg_bin_dir=settings.backup.pg_bin_dir,
            while_locked=while_locked,
        ) as (snapshot, state):
            # The recovery point: what the database and the pinned shards show.
            taken_at = utcnow()
            dumped = snapshot.dump(target)
        entries.append(manifest_file.entry_for(target, target / dumped.file))
        copier = Copier(target, previous)
        for shard in state.shards:
            entries.append(copier.copy(shard.path(staging), shard.path(target / INDEXES)))
        shutil.rmtree(staging, ignore_errors=True)
        blob_entries, meanwhile = _copy_blobs(
            state, ContentStore(settings.files_dir), engine, copier
        )
        entries += blob_entries
        # Read after the dump: every tombstone the snapshot holds, and any recorded since.
        tombstone_file.append(
            target / TOMBSTONES, tombstone_file.merge(_live_tombstones(engine), meanwhile)
        )
        (target / TOMBSTONES).touch(mode=PRIVATE_FILE_MODE)
        entries.append(manifest_file.entry_for(target, target / TOMBSTONES))
        manifest = Manifest(
            created_at=taken_at.isoformat(),
            backend="sqlite" if is_sqlite(url) else "postgresql",
            schema_revision=state.schema_revision,
            database_file=dumped.file,
            database_tool=dumped.tool,
            files=entries,
        )
        manifest_file.write(target, manifest)
        return BackupResult(target, manifest, len(meanwhile), copier.linked)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        engine.dispose()
