"""Recording a tombstone when a purge or an erasure completes (app/backup/tombstone_file.py
says what a tombstone is and why the journal is written before the commit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.backup.tombstone_file import TombstoneKind, TombstoneRecord, append, new_record
from app.backup.tombstone_repository import tombstone_repository

# Where session.info carries the journal's path (app/kit/db.py database_for).
JOURNAL_INFO_KEY = "tombstone_journal"


class TombstoneService:
    async def record(
        self,
        session: AsyncSession,
        kind: TombstoneKind,
        *,
        tenant_id: int | None,
        subject_id: int,
        digest: str | None,
    ) -> TombstoneRecord:
        """Journal the tombstone (fsynced) and add its row to the caller's transaction."""
        record = new_record(kind, tenant_id=tenant_id, subject_id=subject_id, digest=digest)
        journal = session.info.get(JOURNAL_INFO_KEY)
        if journal is not None:
            await asyncio.to_thread(append, Path(journal), [record])
        await tombstone_repository.add_missing(session, [record])
        return record


tombstone_service = TombstoneService()
