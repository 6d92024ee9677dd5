from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.kit.authz import Authorizer, TenantAccess
from app.kit.db import ReadSession
from app.kit.errors import ResourceNotFound
from app.kit.pagination import Page, Pagination
from app.kit.public_ids import ReceiptRef
from app.receipts.repository import receipt_repository
from app.receipts.schemas import ReceiptRead
from app.receipts.service import receipt_service

router = APIRouter(prefix="/api/v1/tenants/{tenant}/deletion-receipts", tags=["deletion"])

ReceiptsRead = Annotated[TenantAccess, Depends(Authorizer("receipts", "read"))]


@router.get("", response_model=Page[ReceiptRead])
async def list_receipts(
    access: ReceiptsRead, session: ReadSession, page: Pagination
) -> Page[ReceiptRead]:
    """What each hard delete in this tenant removed and how it was verified, newest first."""
    rows, total = await receipt_repository.list_for_tenant(
        session, access.tenant_id, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[ReceiptRead.of(r) for r in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{receipt_id}", response_model=ReceiptRead)
async def get_receipt(
    receipt_id: ReceiptRef, access: ReceiptsRead, session: ReadSession
) -> ReceiptRead:
    receipt = await receipt_service.get(session, access.tenant_id, receipt_id)
    if receipt is None:
        raise ResourceNotFound("Deletion receipt not found")
    return ReceiptRead.of(receipt)
