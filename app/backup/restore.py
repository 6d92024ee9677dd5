"""Restoring a backup into an empty data dir and an empty database, in this order:

1. refuse a target that holds anything (the generated development secrets aside: they are
   what an operator puts back first), and a backup whose schema this Cairn does not know;
2. check the manifest: every file's size and SHA-256, nothing missing, nothing added;
3. restore the database (the SQLite file; `pg_restore` of the archive), the shard files and
   the stored files, bytes as they were written (ciphertext stays ciphertext);
4. migrate to head when the backup is older: the purge and erasure code below speaks the
   current schema, so it must run on a migrated database;
5. replay tombstones — the backup's own, the journal in the backup root, the configured
   journal and any named with `--tombstones` — before anything serves: each purged document
   still here is purged again (rows, chunks, shard entries, stored file, through the same
   verified purge as ever), each erased person still here is erased again, and id counters
   move past every id a tombstone names so no later row takes one of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text

from app.backup import manifest as manifest_file
from app.backup import pg_tools, tombstone_file
from app.backup.manifest import BackupInvalid, Manifest
from app.backup.schedule import complete_backups
from app.backup.snapshot import POSTGRES_FILE, SQLITE_FILE
from app.backup.tombstone_file import TombstoneRecord
from app.backup.tombstone_repository import tombstone_repository
from app.backup.writer import FILES, INDEXES, TOMBSTONES
from app.container import Container
from app.documents.cli import run_purges
from app.documents.purge import purge_service
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.kit.actor import SystemActor
from app.kit.db import create_blocking_read_engine, is_sqlite
from app.kit.errors import CairnError
from app.kit.files import PRIVATE_FILE_MODE, private_dir, secure_data_dir
from app.kit.locate import sqlite_path
from app.kit.migrate import alembic_config, upgrade
from app.kit.settings import Settings
from app.privacy.service import privacy_service
from app.tenants.deletion import delete_tenant

# What an otherwise empty data dir may hold: the secrets a development deployment generated
# there (keys are never in a backup; the operator puts them back before restoring).
ALLOWED_IN_EMPTY = frozenset({".jwt_secret", ".audit_secret", ".audit_signing_key"})
_CHUNK = 1024 * 1024


class RestoreRefused(CairnError):
    status_code = 409
    code = "restore_refused"
    message = "The restore was refused"


class RestoreIncomplete(CairnError):
    status_code = 500
    code = "restore_incomplete"
    message = "The restore did not complete"


@dataclass
class RestoreReport:
    manifest: Manifest
    tombstones: int = 0
    tenants_deleted: list[int] = field(default_factory=list)
    documents_purged: list[int] = field(default_factory=list)
    users_erased: list[int] = field(default_factory=list)
    blobs_removed: int = 0
    journals: list[Path] = field(default_factory=list)


def check_empty_target(settings: Settings) -> None:
    """RestoreRefused (one line) unless the data dir and the database hold nothing."""
    url = settings.resolved_database_url
    data_dir = settings.data_dir
    if data_dir.exists():
        if not data_dir.is_dir():
            raise RestoreRefused(f"restore target {data_dir} is not a folder")
        held = sorted(p.name for p in data_dir.iterdir() if p.name not in ALLOWED_IN_EMPTY)
        if held:
            raise RestoreRefused(
                f"restore target {data_dir} is not empty (it holds {', '.join(held[:5])}); "
                "restore only into an empty data dir"
            )
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None and path.exists() and path.stat().st_size > 0:
            raise RestoreRefused(
                f"restore target database {path} is not empty; restore only into a new one"
            )
        return
    engine = create_blocking_read_engine(url)
    try:
        with engine.connect() as connection:
            tables = int(
                connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                        "('pg_catalog', 'information_schema')"
                    )
                )
                or 0
            )
    finally:
        engine.dispose()
    if tables:
        raise RestoreRefused(
            f"restore target database is not empty ({tables} tables); create an empty "
            "database and point database_url at it"
        )


def _check_compatible(manifest: Manifest, settings: Settings) -> None:
    backend = "sqlite" if is_sqlite(settings.resolved_database_url) else "postgresql"
    if manifest.backend != backend:
        raise RestoreRefused(
            f"the backup is of a {manifest.backend} database and database_url names a {backend} one"
        )
    if manifest.schema_revision is not None:
        try:
            ScriptDirectory.from_config(alembic_config("")).get_revision(manifest.schema_revision)
        except CommandError as exc:
            raise RestoreRefused(
                f"the backup's schema revision {manifest.schema_revision} is newer than this "
                "Cairn: restore it with the version that took it"
            ) from exc


def _copy_checked(source: Path, target: Path, expected: str) -> None:
    """Copy bytes into place (0600, fsynced), checking them against the manifest again: a
    file changed since the manifest was verified is not restored."""
    private_dir(target.parent)
    digest = hashlib.sha256()
    tmp = target.with_name(f".{target.name}.restore")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise BackupInvalid(f"backup file changed while restoring: {source}")
    os.replace(tmp, target)


def _restore_database(manifest: Manifest, backup: Path, settings: Settings) -> None:
    url = settings.resolved_database_url
    sha = {e.path: e.sha256 for e in manifest.files}
    if manifest.backend == "sqlite":
        path = sqlite_path(url)
        assert path is not None, "checked: a file-based SQLite URL"
        _copy_checked(backup / SQLITE_FILE, path, sha[SQLITE_FILE])
        return
    dumped_by = int(manifest.database_tool.get("pg_dump_major") or 0)
    client = pg_tools.version_of(pg_tools.tool("pg_restore", settings.backup.pg_bin_dir))
    pg_tools.check_restore_version(client, dumped_by)
    pg_tools.run(
        [
            client.path,
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={pg_tools.connection_env(url).get('PGDATABASE', '')}",
            str(backup / POSTGRES_FILE),
        ],
        env=pg_tools.connection_env(url),
        what="pg_restore",
    )


def _restore_files(manifest: Manifest, backup: Path, settings: Settings) -> None:
    for entry in manifest.files:
        parts = Path(entry.path).parts
        if parts[0] == INDEXES:
            target = settings.index_dir.joinpath(*parts[1:])
        elif parts[0] == FILES:
            target = settings.files_dir.joinpath(*parts[1:])
        else:
            continue
        _copy_checked(backup / entry.path, target, entry.sha256)


def journals_for(backup: Path, settings: Settings, extra: list[Path]) -> list[Path]:
    """The tombstone files a restore reads besides the backup's own: the configured journal,
    the journal in the backup's root (the folder holding it), and those named."""
    found: list[Path] = []
    for named in extra:
        if not named.is_file():
            raise RestoreRefused(f"no tombstone file at {named}")
        found.append(named)
    for path in (settings.backup.journal, backup.parent / "tombstones.jsonl"):
        if path is not None and path.is_file():
            found.append(path)
    unique: dict[Path, Path] = {p.resolve(): p for p in found}
    return list(unique.values())


async def apply_tombstones(
    settings: Settings, records: list[TombstoneRecord], report: RestoreReport
) -> None:
    """Do every purge and erasure the tombstones name again, where this database still holds
    that very row (module docstring, step 5)."""
    runtime = Container(settings)
    database = runtime.database
    try:
        async with database.sessionmaker() as session, session.begin():
            await tombstone_repository.add_missing(session, records)
            await tombstone_repository.start_counters_above(session, records)
        # Deleted tenants first: their documents and keys go with them (shredded, as a
        # tenant deleted without a shred has no data left to protect either).
        for record in (r for r in records if r.kind == "tenant"):
            async with database.read_sessionmaker() as session:
                tenant = await tombstone_repository.tenant(session, record)
            if tenant is not None:
                await delete_tenant(runtime, SystemActor.RESTORE, tenant.slug, shred=True)
                report.tenants_deleted.append(tenant.id)
        job_ids: list[int] = []
        purged: list[int] = []
        for record in (r for r in records if r.kind == "document"):
            async with database.sessionmaker() as session, session.begin():
                document = await tombstone_repository.document(session, record)
                if document is None:
                    continue
                requested = await purge_service.request(
                    session,
                    SystemActor.RESTORE,
                    tenant_id=document.tenant_id,
                    document_id=document.id,
                )
                # A purge under way in the backup already has its job; otherwise one is queued.
                job = requested.job or await job_repository.open_for_subject(
                    session, JobKind.PURGE, document.id
                )
                assert job is not None, "a purge request leaves an open purge job"
                job_ids.append(job.id)
                purged.append(document.id)
        await run_purges(runtime, job_ids)
        async with database.read_sessionmaker() as session:
            for record in (r for r in records if r.kind == "document"):
                if await tombstone_repository.document(session, record) is not None:
                    raise RestoreIncomplete(
                        f"document {record.subject_id} of tenant {record.tenant_id} could not "
                        "be purged again"
                    )
        report.documents_purged = purged
        report.blobs_removed = await _remove_orphan_blobs(runtime, records)
        users = [r for r in records if r.kind == "user"]
        async with database.read_sessionmaker() as session:
            present = await tombstone_repository.users_by_id(session, [r.subject_id for r in users])
            wanted = {r.subject_id: r.digest for r in users}
            doomed = [
                (u.id, u.username)
                for u in present
                if tombstone_file.user_digest(u.subject) == wanted.get(u.id)
            ]
        for user_id, username in doomed:
            async with database.sessionmaker() as session, session.begin():
                await privacy_service.erase(
                    session, SystemActor.RESTORE, username=username, replay=True
                )
            report.users_erased.append(user_id)
        await database.checkpoint_wal()
    finally:
        await runtime.close()


async def _remove_orphan_blobs(runtime: Runtime, records: list[TombstoneRecord]) -> int:
    """A purged document's stored file with no row left to purge (a backup taken as a purge
    finished): deleted unless another document of its tenant holds the same content."""
    removed = 0
    async with runtime.database.read_sessionmaker() as session:
        for record in records:
            if record.kind != "document" or record.tenant_id is None or record.digest is None:
                continue
            if not runtime.store.path_for(record.tenant_id, record.digest).exists():
                continue
            if await tombstone_repository.shares_content(session, record.tenant_id, record.digest):
                continue
            await asyncio.to_thread(runtime.store.delete, record.tenant_id, record.digest)
            removed += 1
    return removed


def restore(settings: Settings, backup: Path, *, tombstone_files: list[Path]) -> RestoreReport:
    """Restore `backup` into the configured, empty data dir and database (module docstring).
    Blocking, and runs its own event loops: call it outside one."""
    backup = backup.resolve() if backup.exists() else backup
    if backup.is_dir() and not (backup / manifest_file.MANIFEST).exists():
        # The backup root: its newest complete backup.
        newest = complete_backups(backup)
        backup = newest[-1] if newest else backup
    manifest = manifest_file.verify(backup)
    _check_compatible(manifest, settings)
    journals = journals_for(backup, settings, tombstone_files)
    records = tombstone_file.merge(
        tombstone_file.read(backup / TOMBSTONES), *(tombstone_file.read(p) for p in journals)
    )
    check_empty_target(settings)
    url = settings.resolved_database_url
    secure_data_dir(settings.data_dir, url)
    report = RestoreReport(manifest, tombstones=len(records), journals=journals)
    try:
        _restore_database(manifest, backup, settings)
        _restore_files(manifest, backup, settings)
        upgrade(url)
        asyncio.run(apply_tombstones(settings, records, report))
    except Exception as exc:
        left = _undo(settings)
        raise RestoreIncomplete(f"{_one_line(exc)}; {left}") from exc
    return report


def _one_line(exc: Exception) -> str:
    text = exc.message if isinstance(exc, CairnError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _undo(settings: Settings) -> str:
    """After a failed restore: remove what it wrote to the data dir (it was empty); a
    PostgreSQL database is the operator's to drop and create again. What to tell them."""
    for folder in (settings.index_dir, settings.files_dir):
        shutil.rmtree(folder, ignore_errors=True)
    path = sqlite_path(settings.resolved_database_url)
    if path is not None:
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)
        return "nothing restored was kept"
    return (
        "the database may hold part of the backup and must not be served: drop it, create "
        "it empty and restore again"
    )
