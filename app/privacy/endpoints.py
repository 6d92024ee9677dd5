from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks

from app.kit.authz import CurrentEnforcer
from app.kit.db import AppDatabase, Session
from app.privacy.permissions import PrivacyEraser, PrivacyExporter
from app.privacy.schemas import EraseRequest, PrivacyExport
from app.privacy.service import privacy_service
from app.receipts.schemas import ReceiptRead

router = APIRouter(prefix="/api/v1/privacy", tags=["privacy"])


@router.get("/export", response_model=PrivacyExport)
async def export(
    grant: PrivacyExporter, session: Session, enforcer: CurrentEnforcer
) -> PrivacyExport:
    """Everything held about a person (GDPR article 15): account, memberships, API key
    metadata, chat sessions with messages, uploaded documents' metadata, audit entries."""
    return await privacy_service.export(session, grant.principal, enforcer, username=grant.username)


@router.post("/erase", response_model=ReceiptRead)
async def erase(
    data: EraseRequest,
    principal: PrivacyEraser,
    session: Session,
    database: AppDatabase,
    background: BackgroundTasks,
) -> ReceiptRead:
    """Erase a person (GDPR article 17); the verified deletion receipt."""
    receipt = await privacy_service.erase(session, principal, username=data.username)
    # Runs once the response is sent: after the transaction committed and this request's
    # reads ended (a reader's snapshot would hold the checkpoint back).
    background.add_task(privacy_service.scrub, database)
    return ReceiptRead.of(receipt)
