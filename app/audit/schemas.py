from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, BeforeValidator

from app.audit.chain import GLOBAL_CHAIN
from app.audit.checkpoints import Checkpoint
from app.audit.service import (
    ActorKind,
    AuditQuery,
    ShownEntry,
    VerifyReport,
    details_dict,
)
from app.kit.bounds import BoundedDatetime
from app.kit.public_ids import AuditEntryId, IdKind, encode_id

# Entries store the integer keys of what they are about; the API shows public ids instead.
_TARGET_KINDS = {
    "document": IdKind.DOCUMENT,
    "chat_session": IdKind.CHAT_SESSION,
    "chat_message": IdKind.CHAT_MESSAGE,
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
    "receipt_id": IdKind.RECEIPT,
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


def _blank_is_none(value: object) -> object:
    return None if value == "" else value


# An empty field of a submitted form (the audit page's filters) is no filter.
FormTime = Annotated[BoundedDatetime | None, BeforeValidator(_blank_is_none)]


def audit_query(
    action: Annotated[
        str | None, Query(max_length=64, description="a part of the action's name, any case")
    ] = None,
    actor: Annotated[
        str | None,
        Query(max_length=64, description='a username, or a system actor ("system:<name>")'),
    ] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    # A time without a zone is read as UTC; one outside app.kit.bounds' range is refused.
    since: Annotated[FormTime, Query()] = None,
    until: Annotated[FormTime, Query()] = None,
) -> AuditQuery:
    """The filters of the audit listing, its export and the audit page."""
    return AuditQuery(
        action=action or None,
        actor=actor or None,
        target_type=target_type or None,
        target_id=target_id or None,
        since=since,
        until=until,
    )


AuditQueryParams = Annotated[AuditQuery, Depends(audit_query)]


class AuditEntryRead(BaseModel):
    id: AuditEntryId
    seq: int
    created_at: datetime
    action: str
    outcome: str
    # "user": `actor` is the username of a person the reader may see (a member of the tenant);
    # "system": the server's own work, `actor` its name ("retention_purge"); "erased": a person
    # erased since, `actor` a pseudonym; "outside": a person the reader may not see (no role in
    # the tenant now); "none": no actor recorded. Outside and none carry no name.
    actor_kind: ActorKind
    actor: str | None
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, shown: ShownEntry) -> AuditEntryRead:
        return cls(**_read_fields(shown))


class AuditExportRow(AuditEntryRead):
    """One exported entry: as listed, with the hash that links it into the chain."""

    entry_hash: str

    @classmethod
    def of(cls, shown: ShownEntry) -> AuditExportRow:
        return cls(**_read_fields(shown), entry_hash=shown.entry.entry_hash)


def _read_fields(shown: ShownEntry) -> dict[str, Any]:
    entry = shown.entry
    return {
        "id": entry.id,
        "seq": entry.seq,
        "created_at": entry.created_at,
        "action": entry.action,
        "outcome": entry.outcome,
        "actor_kind": shown.actor.kind,
        "actor": shown.actor.name,
        "target_type": entry.target_type,
        "target_id": _public(_TARGET_KINDS.get(entry.target_type or ""), entry.target_id),
        "details": {k: _public(_DETAIL_KINDS.get(k), v) for k, v in details_dict(entry).items()},
    }


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
