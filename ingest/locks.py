"""One index writer per tenant at a time, across processes and machines."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text

from app.kit.db import Database

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
