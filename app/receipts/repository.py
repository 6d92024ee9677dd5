"""Deletion receipt queries: the only SQL over `deletion_receipts`."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import DeletionReceipt


class ReceiptRepository:
    def add(self, session: AsyncSession, receipt: DeletionReceipt) -> DeletionReceipt:
        session.add(receipt)
        return receipt

    async def get(self, session: AsyncSession, receipt_id: int) -> DeletionReceipt | None:
        return await session.get(DeletionReceipt, receipt_id)

    async def get_for_tenant(
        self, session: AsyncSession, tenant_id: int, receipt_id: int
    ) -> DeletionReceipt | None:
        """The receipt when it belongs to the tenant; None otherwise."""
        return await session.scalar(
            select(DeletionReceipt).where(
                DeletionReceipt.id == receipt_id, DeletionReceipt.tenant_id == tenant_id
            )
        )

    async def add_counts(
        self, session: AsyncSession, receipt_id: int, counts: dict[str, int]
    ) -> None:
        """Add to the receipt's `removed` counts, in the caller's transaction: a step of an
        erasure records what it removed in the same commit that removes it."""
        receipt = await session.get(DeletionReceipt, receipt_id, with_for_update=True)
        if receipt is None:
            return
        removed = json.loads(receipt.removed or "{}")
        for name, count in counts.items():
            removed[name] = int(removed.get(name, 0)) + count
        receipt.removed = json.dumps(removed, sort_keys=True)

    async def open_for(
        self, session: AsyncSession, subject_type: str, subject_id: int
    ) -> DeletionReceipt | None:
        """The subject's receipt that is not done yet, if any."""
        return await session.scalar(
            select(DeletionReceipt)
            .where(
                DeletionReceipt.subject_type == subject_type,
                DeletionReceipt.subject_id == subject_id,
                DeletionReceipt.status != "done",
            )
            .order_by(DeletionReceipt.id.desc())
            .limit(1)
        )

    async def list_for_tenant(
        self, session: AsyncSession, tenant_id: int, *, limit: int, offset: int
    ) -> tuple[Sequence[DeletionReceipt], int]:
        """A tenant's receipts, newest first."""
        where = DeletionReceipt.tenant_id == tenant_id
        total = await session.scalar(select(func.count()).select_from(DeletionReceipt).where(where))
        rows = await session.scalars(
            select(DeletionReceipt)
            .where(where)
            .order_by(DeletionReceipt.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return rows.all(), int(total or 0)


receipt_repository = ReceiptRepository()
