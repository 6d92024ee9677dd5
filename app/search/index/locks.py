"""One index writer per tenant at a time, across processes and machines."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from app.kit.db import Database, create_blocking_read_engine, is_sqlite

_ADVISORY_NAMESPACE = 0x0CA1  # first key of pg_advisory_lock(int, int): "Cairn index writer"


@asynccontextmanager
async def tenant_index_lock(
    database: Database, index_root: Path, tenant_id: int
) -> AsyncIterator[None]:
    """Exclusive right to rewrite a tenant's shards.

    PostgreSQL deployments may run workers on several machines over a shared volume, so the
    lock is a session advisory lock there; the embedded default uses flock on a local file.
    """
    if not database.is_sqlite:
        async with database.engine.connect() as conn:
            await conn.execute(
                text("SELECT pg_advisory_lock(:ns, :tenant)"),
                {"ns": _ADVISORY_NAMESPACE, "tenant": tenant_id},
            )
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:ns, :tenant)"),
                    {"ns": _ADVISORY_NAMESPACE, "tenant": tenant_id},
                )
                await conn.commit()
        return
    folder = index_root / f"tenant-{tenant_id}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # Blocking flock in a thread; the lock dies with the process if it is killed.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class HeldIndexLocks:
    """Blocking: the index writer locks of several tenants at once, taken in the order asked
    and held until `release`. For a backup, which pins the shard files its database snapshot
    names while no writer can replace or delete them (app/backup/snapshot.py).

    A writer holds one tenant's lock at a time and takes no other while holding it, so
    holding many here cannot deadlock with writers. Call from a worker thread."""

    def __init__(self, database_url: str, index_root: Path) -> None:
        self._index_root = index_root
        self._held: dict[int, int] = {}  # tenant -> flock fd (SQLite)
        self._pg: Connection | None = None
        self._engine: Engine | None = None
        self._url = database_url

    @property
    def tenants(self) -> frozenset[int]:
        return frozenset(self._held)

    def acquire(self, tenant_ids: Iterable[int]) -> None:
        for tenant_id in tenant_ids:
            if tenant_id in self._held:
                continue
            if is_sqlite(self._url):
                folder = self._index_root / f"tenant-{tenant_id}"
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(folder / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._held[tenant_id] = fd
                continue
            if self._pg is None:
                self._engine = create_blocking_read_engine(self._url)
                self._pg = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._pg.execute(
                text("SELECT pg_advisory_lock(:ns, :tenant)"),
                {"ns": _ADVISORY_NAMESPACE, "tenant": tenant_id},
            )
            self._held[tenant_id] = -1

    def release(self) -> None:
        for fd in self._held.values():
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._held.clear()
        if self._pg is not None:
            # Session advisory locks end with the session.
            self._pg.execute(text("SELECT pg_advisory_unlock_all()"))
            self._pg.close()
            self._pg = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
