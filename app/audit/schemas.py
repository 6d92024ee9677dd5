from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.audit.service import VerifyReport, details_dict
from app.models import AuditEntry


class AuditEntryRead(BaseModel):
    id: int
    seq: int
    created_at: datetime
    action: str
    outcome: str
    actor: str | None
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryRead:
        if entry.actor_name is not None:
            actor: str | None = entry.actor_name
        elif entry.actor_commitment is not None:
            actor = f"erased:{entry.actor_commitment[:12]}"
        else:
            actor = None
        return cls(
            id=entry.id,
            seq=entry.seq,
            created_at=entry.created_at,
            action=entry.action,
            outcome=entry.outcome,
            actor=actor,
            target_type=entry.target_type,
            target_id=entry.target_id,
            details=details_dict(entry),
        )


class BadEntryRead(BaseModel):
    chain: str
    seq: int
    id: int | None
    reason: str


class VerifyRead(BaseModel):
    ok: bool
    entries: int
    first_bad: BadEntryRead | None

    @classmethod
    def of(cls, report: VerifyReport) -> VerifyRead:
        bad = report.first_bad
        return cls(
            ok=report.ok,
            entries=report.entries,
            first_bad=BadEntryRead(chain=bad.chain, seq=bad.seq, id=bad.id, reason=bad.reason)
            if bad
            else None,
        )
