"""The database half of a backup: one consistent snapshot, and the shard files it names pinned.

Consistency between the database and the files is the whole difficulty of an online backup.
The order here:

1. take the index writer lock of every tenant (app/search/index/locks.py): no flush, purge
   rewrite or compaction can now replace or delete a shard file;
2. open the snapshot — SQLite: a read transaction on one connection (WAL: writers go on);
   PostgreSQL: a REPEATABLE READ transaction whose snapshot is exported — and read from it
   the schema revision, every shard's current version and every document's blob;
3. hard-link each shard file the snapshot names into a staging folder beside the shards
   (the same file system, so a link is instant and the bytes stay however the shard is
   later replaced or deleted; a copy where links are not possible);
4. release the locks: index writers wait only for steps 2 and 3;
5. dump the database from the same snapshot — SQLite's online backup API on the connection
   that holds it (never a copy of a live file); pg_dump with `--snapshot`.

Blobs need no pin: a stored file is never changed, only created before its document row
commits and deleted by a purge. A blob the snapshot names and a purge deleted meanwhile is
left out, and the backup carries a tombstone for its document instead, so a restore purges
it again (app/backup/writer.py). Files newer than the snapshot are not copied.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, text

from app.backup import pg_tools
from app.kit.db import create_blocking_read_engine, is_sqlite
from app.kit.errors import CairnError
from app.kit.files import create_private_file
from app.kit.locate import sqlite_path
from app.search.index.layout import ShardKind, shard_path
from app.search.index.locks import HeldIndexLocks

SQLITE_FILE = "database.sqlite3"
POSTGRES_FILE = "database.pgdump"
# Tenants created between listing them and opening the snapshot are locked in a second round;
# a file they named that was replaced meanwhile means starting over, at most this often.
PIN_ATTEMPTS = 3

_STATE_QUERIES = {
    "revision": "SELECT version_num FROM alembic_version",
    "tenants": "SELECT id FROM tenants ORDER BY id",
    "shards": "SELECT tenant_id, kind, shard_no, version FROM index_shards WHERE version > 0",
    "blobs": "SELECT tenant_id, id, content_sha256, status FROM documents",
}


class BackupFailed(CairnError):
    status_code = 500
    code = "backup_failed"
    message = "The backup failed"


@dataclass(frozen=True)
class ShardRef:
    tenant_id: int
    kind: ShardKind
    shard_no: int
    version: int

    def path(self, index_root: Path) -> Path:
        return shard_path(index_root, self.tenant_id, self.kind, self.shard_no, self.version)


@dataclass(frozen=True)
class BlobRef:
    tenant_id: int
    document_id: int
    sha256: str
    status: str


@dataclass(frozen=True)
class SnapshotState:
    """What the snapshot names outside the database."""

    schema_revision: str | None
    tenants: tuple[int, ...]
    shards: tuple[ShardRef, ...]
    blobs: tuple[BlobRef, ...]


@dataclass(frozen=True)
class Dumped:
    file: str
    tool: dict[str, Any]


class DatabaseSnapshot(Protocol):
    backend: str

    def state(self) -> SnapshotState: ...

    def dump(self, target: Path) -> Dumped: ...

    def close(self) -> None: ...


def _state(query: Callable[[str], Sequence[Sequence[Any]]]) -> SnapshotState:
    revisions = [str(r[0]) for r in query(_STATE_QUERIES["revision"])]
    return SnapshotState(
        schema_revision=revisions[0] if revisions else None,
        tenants=tuple(int(r[0]) for r in query(_STATE_QUERIES["tenants"])),
        shards=tuple(
            ShardRef(int(t), "vector" if k == "vector" else "bm25", int(n), int(v))
            for t, k, n, v in query(_STATE_QUERIES["shards"])
        ),
        blobs=tuple(
            BlobRef(int(t), int(d), str(sha), str(status))
            for t, d, sha, status in query(_STATE_QUERIES["blobs"])
            if sha
        ),
    )


class SqliteSnapshot:
    """A read transaction on its own connection; WAL lets writers go on meanwhile."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._connection.execute("BEGIN")
        # The snapshot is fixed by the transaction's first read.
        self._state = _state(lambda sql: self._connection.execute(sql).fetchall())

    def state(self) -> SnapshotState:
        return self._state

    def dump(self, target: Path) -> Dumped:
        """SQLite's online backup API, all pages in one step from the open read transaction:
        the copy is the snapshot, whatever writers commit meanwhile."""
        path = target / SQLITE_FILE
        create_private_file(path, "")
        destination = sqlite3.connect(path)
        try:
            self._connection.backup(destination)
        finally:
            destination.close()
        return Dumped(
            SQLITE_FILE, {"tool": "sqlite3 online backup API", "sqlite": sqlite3.sqlite_version}
        )

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._connection.execute("ROLLBACK")
        self._connection.close()


class PostgresSnapshot:
    """A REPEATABLE READ transaction with its snapshot exported for pg_dump; it stays open
    until the dump is done."""

    backend = "postgresql"

    def __init__(self, database_url: str, bin_dir: Path | None) -> None:
        self._url = database_url
        self._bin_dir = bin_dir
        self._engine = create_blocking_read_engine(database_url)
        self._connection: Connection = self._engine.connect().execution_options(
            isolation_level="REPEATABLE READ"
        )
        self._connection.begin()
        # The first statement fixes the transaction's snapshot; exported, pg_dump joins it.
        self._snapshot_id = str(self._connection.scalar(text("SELECT pg_export_snapshot()")))
        self.server_major = (
            int(self._connection.scalar(text("SHOW server_version_num")) or 0) // 10000
        )
        self._state = _state(lambda sql: self._connection.execute(text(sql)).all())

    def state(self) -> SnapshotState:
        return self._state

    def dump(self, target: Path) -> Dumped:
        client = pg_tools.version_of(pg_tools.tool("pg_dump", self._bin_dir))
        pg_tools.check_dump_version(client, self.server_major)
        path = target / POSTGRES_FILE
        create_private_file(path, "")
        pg_tools.run(
            [
                client.path,
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--snapshot={self._snapshot_id}",
                f"--file={path}",
            ],
            env=pg_tools.connection_env(self._url),
            what="pg_dump",
        )
        return Dumped(
            POSTGRES_FILE,
            {
                "tool": "pg_dump --format=custom",
                "pg_dump_major": client.major,
                "pg_dump_version": client.text,
                "server_major": self.server_major,
            },
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.rollback()
        self._connection.close()
        self._engine.dispose()


def open_snapshot(database_url: str, pg_bin_dir: Path | None) -> DatabaseSnapshot:
    if is_sqlite(database_url):
        path = sqlite_path(database_url)
        if path is None:
            raise BackupFailed("an in-memory SQLite database cannot be backed up")
        return SqliteSnapshot(path)
    return PostgresSnapshot(database_url, pg_bin_dir)


def _list_tenants(database_url: str) -> list[int]:
    engine = create_blocking_read_engine(database_url)
    try:
        with engine.connect() as connection:
            return [int(r[0]) for r in connection.execute(text(_STATE_QUERIES["tenants"]))]
    finally:
        engine.dispose()


def _pin(shard: ShardRef, index_root: Path, staging: Path) -> None:
    source = shard.path(index_root)
    target = shard.path(staging)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise  # the file is gone: the caller decides (FileNotFoundError is an OSError too)
    except OSError:
        # No hard links on this file system: copy while the lock is still held.
        shutil.copyfile(source, target)


@contextlib.contextmanager
def pinned_snapshot(
    database_url: str,
    index_root: Path,
    staging: Path,
    *,
    pg_bin_dir: Path | None = None,
    while_locked: Callable[[SnapshotState], None] | None = None,
) -> Iterator[tuple[DatabaseSnapshot, SnapshotState]]:
    """A database snapshot whose shard files are pinned in `staging` (module docstring);
    the snapshot stays open inside the block, for its dump. `while_locked` runs before the
    index writer locks are released: what the index serves then is what the backup holds."""
    for _ in range(PIN_ATTEMPTS):
        locks = HeldIndexLocks(database_url, index_root)
        snapshot: DatabaseSnapshot | None = None
        try:
            locks.acquire(_list_tenants(database_url))
            snapshot = open_snapshot(database_url, pg_bin_dir)
            state = snapshot.state()
            late = set(state.tenants) - locks.tenants
            # A tenant created after the listing: lock it too (a writer may have moved its
            # shards on between the snapshot and now; then start over).
            locks.acquire(sorted(late))
            try:
                for shard in state.shards:
                    _pin(shard, index_root, staging)
            except FileNotFoundError as exc:
                if any(s.tenant_id in late for s in state.shards):
                    shutil.rmtree(staging, ignore_errors=True)
                    snapshot.close()
                    snapshot = None
                    continue
                raise BackupFailed(
                    f"a shard file the database names is missing: {exc.filename}"
                ) from exc
            if while_locked is not None:
                while_locked(state)
        except BaseException:
            if snapshot is not None:
                snapshot.close()
            raise
        finally:
            locks.release()
        try:
            yield snapshot, state
        finally:
            snapshot.close()
        return
    raise BackupFailed("index writers kept replacing shards of new tenants; try again")
