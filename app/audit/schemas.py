from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.audit.chain import GLOBAL_CHAIN
from app.audit.checkpoints import Checkpoint
from app.audit.service import VerifyReport, details_dict
from app.kit.public_ids import AuditEntryId, IdKind, encode_id
from app.models import AuditEntry

# Entries store the integer keys of what they are about; the API shows public ids instead.
_TARGET_KINDS = {
    "document": IdKind.DOCUMENT,
    "chat_session": IdKind.CHAT_SESSION,
    "api_key": IdKind.API_KEY,
    "tenant": IdKind.TENANT,
    "user": IdKind.USER,
    "deletion_receipt": IdKind.RECEIPT,
}
_DETAIL_KINDS = {
    "document_id": IdKind.DOCUMENT,
    "document_ids": IdKind.DOCUMENT,
    "passage_document_ids": IdKind.DOCUMENT,
    "cited_document_ids": IdKind.DOCUMENT,
}


def _public(kind: IdKind | None, value: Any) -> Any:
    if kind is None:
        return value
    if isinstance(value, list):
        return [_public(kind, v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return encode_id(kind, value)
    if isinstance(value, str) and value.isdigit():
        return encode_id(kind, int(value))
    return value


def public_chain(chain: str) -> str:
    """A chain's name as the API shows it: tenant chains by the tenant's public id."""
    if chain == GLOBAL_CHAIN or ":" not in chain:
        return chain
    prefix, _, key = chain.partition(":")
    return f"{prefix}:{_public(IdKind.TENANT, key)}"


class AuditEntryRead(BaseModel):
    id: AuditEntryId
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
            target_id=_public(_TARGET_KINDS.get(entry.target_type or ""), entry.target_id),
            details={k: _public(_DETAIL_KINDS.get(k), v) for k, v in details_dict(entry).items()},
        )


class BadEntryRead(BaseModel):
    chain: str
    seq: int
    id: AuditEntryId | None
    reason: str


class VerifyRead(BaseModel):
    ok: bool
    entries: int
    first_bad: BadEntryRead | None
    # Signed checkpoints checked against the chains (app/audit/checkpoints.py).
    checkpoints: int

    @classmethod
    def of(cls, report: VerifyReport) -> VerifyRead:
        bad = report.first_bad
        return cls(
            ok=report.ok,
            entries=report.entries,
            checkpoints=report.checkpoints,
            first_bad=BadEntryRead(
                chain=public_chain(bad.chain), seq=bad.seq, id=bad.id, reason=bad.reason
            )
            if bad
            else None,
        )


class CheckpointRead(BaseModel):
    """A signed checkpoint exactly as signed: `chain` is the public chain name, and `signature`
    (base64 Ed25519) covers b"cairn-audit-checkpoint-v1\\n" + the canonical JSON of
    {chain, head_hash, seq, time} (see app/audit/checkpoints.py)."""

    chain: str
    seq: int
    head_hash: str
    time: str
    key_id: str
    signature: str

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointRead:
        return cls(
            chain=checkpoint.chain,
            seq=checkpoint.seq,
            head_hash=checkpoint.head_hash,
            time=checkpoint.time,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )


class PublicKeyRead(BaseModel):
    algorithm: str = "Ed25519"
    key_id: str
    public_key_pem: str
