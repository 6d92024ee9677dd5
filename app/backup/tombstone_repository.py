"""The SQL of tombstones and of replaying them: the rows a restore must delete again, and
id counters moved past every id a tombstone names."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.backup.tombstone_file import TombstoneRecord, tenant_digest
from app.models import Document, Tenant, Tombstone, User

# Tables whose ids tombstones name: a restored counter must not hand them out again.
_COUNTED = {"document": "documents", "user": "users", "tenant": "tenants"}


class TombstoneRepository:
    async def add_missing(self, session: AsyncSession, records: Sequence[TombstoneRecord]) -> None:
        """Insert the records not stored yet (one row per kind and subject)."""
        if not records:
            return
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        for record in records:
            await session.execute(
                dialect.insert(Tombstone)
                .values(
                    kind=record.kind,
                    tenant_id=record.tenant_id,
                    subject_id=record.subject_id,
                    digest=record.digest,
                    recorded_at=datetime.fromisoformat(record.recorded_at),
                )
                .on_conflict_do_nothing(index_elements=["kind", "subject_id"])
            )

    async def all(self, session: AsyncSession) -> Sequence[Tombstone]:
        return (await session.scalars(select(Tombstone).order_by(Tombstone.id))).all()

    async def document(self, session: AsyncSession, record: TombstoneRecord) -> Document | None:
        """The document the tombstone names, if this database still holds that very one."""
        document = await session.get(Document, record.subject_id)
        if (
            document is None
            or document.tenant_id != record.tenant_id
            or document.content_sha256 != record.digest
        ):
            return None
        return document

    async def tenant(self, session: AsyncSession, record: TombstoneRecord) -> Tenant | None:
        """The tenant the tombstone names, if this database still holds that very one."""
        tenant = await session.get(Tenant, record.subject_id)
        if tenant is None or tenant_digest(tenant.id, tenant.slug) != record.digest:
            return None
        return tenant

    async def users_by_id(self, session: AsyncSession, user_ids: Sequence[int]) -> list[User]:
        if not user_ids:
            return []
        return list((await session.scalars(select(User).where(User.id.in_(user_ids)))).all())

    async def shares_content(self, session: AsyncSession, tenant_id: int, sha256: str) -> bool:
        """Whether any document of the tenant holds a file with this content."""
        found = await session.scalar(
            select(Document.id)
            .where(Document.tenant_id == tenant_id, Document.content_sha256 == sha256)
            .limit(1)
        )
        return found is not None

    async def start_counters_above(
        self, session: AsyncSession, records: Sequence[TombstoneRecord]
    ) -> None:
        """Move the documents', users' and tenants' id counters past every id a tombstone
        names, so a row created after a restore never takes the id of one deleted after the
        backup."""
        backend = session.get_bind().dialect.name
        for kind, table in _COUNTED.items():
            named = [r.subject_id for r in records if r.kind == kind]
            if not named:
                continue
            ids = {"document": Document.id, "user": User.id, "tenant": Tenant.id}[kind]
            highest = max(max(named), int(await session.scalar(select(func.max(ids))) or 0))
            if backend == "postgresql":
                # setval never moves a sequence back here: GREATEST with its last value.
                await session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"GREATEST(:highest, (SELECT last_value FROM {table}_id_seq)))"
                    ),
                    {"highest": highest},
                )
                continue
            updated = await session.execute(
                text("UPDATE sqlite_sequence SET seq = :seq WHERE name = :name AND seq < :seq"),
                {"seq": highest, "name": table},
            )
            if updated.rowcount == 0:  # type: ignore[attr-defined]
                exists = await session.scalar(
                    text("SELECT 1 FROM sqlite_sequence WHERE name = :name"), {"name": table}
                )
                if exists is None:
                    await session.execute(
                        text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"),
                        {"seq": highest, "name": table},
                    )


tombstone_repository = TombstoneRepository()
