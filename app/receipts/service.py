"""Deletion receipts: opened when an erasure is requested, completed only after verification.

A completed receipt is hashed (SHA-256 over its canonical JSON) and the hash is appended to
the audit chain (the tenant's for a document, the platform's for a person), so a receipt
edited later no longer matches the chain. Names and titles appear only as `name_digest`, an
HMAC under the audit secret: a dictionary of likely titles cannot be tested against it
without the secret.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_secret_of, audit_service
from app.kit.actor import Actor, SystemActor
from app.kit.principal import Principal
from app.kit.security import keyed_digest
from app.models import DeletionReceipt
from app.models.base import utcnow
from app.receipts.repository import receipt_repository


@dataclass
class Verification:
    """The checks an erasure ran after removing; it passed only if every check did."""

    checks: list[dict[str, Any]] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str = "") -> None:
        """Record one check."""
        self.checks.append({"name": name, "passed": bool(passed), "detail": detail})

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c["passed"] for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [f"{c['name']}: {c['detail']}".rstrip(": ") for c in self.checks if not c["passed"]]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": self.checks}


def receipt_hash(receipt: DeletionReceipt) -> str:
    """SHA-256 of the receipt's canonical content (everything but the hash itself)."""
    content = {
        "id": receipt.id,
        "tenant_id": receipt.tenant_id,
        "subject_type": receipt.subject_type,
        "subject_id": receipt.subject_id,
        "content_sha256": receipt.content_sha256,
        "name_digest": receipt.name_digest,
        "requested_by": receipt.requested_by,
        "requested_at": receipt.requested_at.isoformat() if receipt.requested_at else None,
        "completed_at": receipt.completed_at.isoformat() if receipt.completed_at else None,
        "status": receipt.status,
        "removed": json.loads(receipt.removed or "{}"),
        "verification": json.loads(receipt.verification or "{}"),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# The subject of a replaced file's erasure: the document stays (its id is the subject id), the
# version it held before the replacement is what the receipt says was removed.
VERSION_SUBJECT = "document_version"


class ReceiptService:
    async def get(
        self, session: AsyncSession, tenant_id: int, receipt_id: int
    ) -> DeletionReceipt | None:
        """The tenant's receipt; None when there is none with this id in the tenant."""
        return await receipt_repository.get_for_tenant(session, tenant_id, receipt_id)

    async def open(
        self,
        session: AsyncSession,
        *,
        subject_type: str,
        subject_id: int,
        tenant_id: int | None,
        requested_by: Principal | SystemActor,
        content_sha256: str | None = None,
        name: str | None = None,
    ) -> DeletionReceipt:
        """The subject's pending receipt (an existing open one is reused)."""
        existing = await receipt_repository.open_for(session, subject_type, subject_id)
        if existing is not None:
            return existing
        receipt = receipt_repository.add(
            session,
            DeletionReceipt(
                tenant_id=tenant_id,
                subject_type=subject_type,
                subject_id=subject_id,
                content_sha256=content_sha256,
                name_digest=keyed_digest(audit_secret_of(session), f"name:{name}")
                if name
                else None,
                requested_by=(
                    requested_by.user_id if isinstance(requested_by, Principal) else None
                ),
                requested_at=utcnow(),
                status="pending",
            ),
        )
        await session.flush()
        return receipt

    async def record_failure(
        self, session: AsyncSession, receipt: DeletionReceipt, error: str, *, final: bool
    ) -> None:
        """Keep the receipt pending (or failed after the last attempt) with the reason."""
        receipt.error = error[:2000]
        receipt.status = "failed" if final else "pending"

    async def complete(
        self,
        session: AsyncSession,
        receipt: DeletionReceipt,
        *,
        removed: dict[str, int],
        verification: Verification,
        action: str,
        actor: Actor | Principal,
    ) -> None:
        """Mark a verified erasure done, hash the receipt and chain the hash in the audit log.

        Refuses (ValueError) when the verification did not pass: a receipt is never done
        before verification."""
        if not verification.passed:
            raise ValueError("an erasure that failed verification cannot be completed")
        receipt.removed = json.dumps(removed, sort_keys=True)
        receipt.verification = json.dumps(verification.as_dict(), sort_keys=True)
        receipt.completed_at = utcnow()
        receipt.status = "done"
        receipt.error = None
        receipt.receipt_hash = receipt_hash(receipt)
        await audit_service.record(
            session,
            action=action,
            actor=actor,
            tenant_id=receipt.tenant_id,
            target_type="deletion_receipt",
            target_id=receipt.id,
            details={"receipt_hash": receipt.receipt_hash, "subject_type": receipt.subject_type},
        )


receipt_service = ReceiptService()
