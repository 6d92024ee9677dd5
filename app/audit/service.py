"""The audit service: every state change and every login is recorded through `record`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.chain import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    BadEntry,
    ChainVerifier,
    actor_commitment,
    canonical_details,
    compute_hash,
    tenant_chain,
)
from app.audit.repository import AuditFilter, audit_repository
from app.kit.principal import Principal
from app.models import AuditChainHead, AuditEntry
from app.models.base import utcnow

# Keys whose values must never land in the log, whatever a caller passes.
_FORBIDDEN_DETAIL_KEYS = frozenset(
    {"password", "token", "key", "secret", "text", "query", "question", "content", "answer"}
)

DetailValue = str | int | float | bool | None | list[str] | list[int]


def audit_secret_of(session: AsyncSession) -> str:
    """The deployment's audit key, carried in session.info by app.kit.db.Database."""
    secret = session.info.get("audit_secret")
    if not isinstance(secret, str) or not secret:
        raise RuntimeError("session has no audit_secret; create it through app.kit.db.Database")
    return secret


@dataclass(frozen=True)
class Actor:
    user_id: int
    username: str

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.user_id, principal.username)


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    first_bad: BadEntry | None


class AuditService:
    async def create_chain(self, session: AsyncSession, tenant_id: int) -> None:
        """Start a tenant's chain (called in the transaction that creates the tenant)."""
        audit_repository.add_head(
            session, AuditChainHead(chain=tenant_chain(tenant_id), seq=0, last_hash=GENESIS_HASH)
        )
        await session.flush()

    async def record(
        self,
        session: AsyncSession,
        *,
        action: str,
        actor: Actor | Principal | None,
        tenant_id: int | None = None,
        target_type: str | None = None,
        target_id: str | int | None = None,
        details: dict[str, DetailValue] | None = None,
        outcome: str = "success",
    ) -> AuditEntry:
        """Append an entry to the tenant's chain (or the global one) in the caller's transaction.

        Details hold ids and enums only: no document text, query text, secrets or names (names
        would survive a person's erasure inside the hash).
        """
        if details and _FORBIDDEN_DETAIL_KEYS.intersection(details):
            raise ValueError(f"audit details may not carry {_FORBIDDEN_DETAIL_KEYS & set(details)}")
        if isinstance(actor, Principal):
            actor = Actor.of(actor)
        chain = tenant_chain(tenant_id) if tenant_id is not None else GLOBAL_CHAIN
        head = await audit_repository.lock_head(session, chain)
        if head is None:
            raise RuntimeError(f"audit chain {chain} has no head")
        entry = AuditEntry(
            chain=chain,
            seq=head.seq + 1,
            created_at=utcnow(),
            action=action,
            outcome=outcome,
            tenant_id=tenant_id,
            actor_id=actor.user_id if actor else None,
            actor_name=actor.username if actor else None,
            actor_commitment=(
                actor_commitment(audit_secret_of(session), actor.user_id, actor.username)
                if actor
                else None
            ),
            target_type=target_type,
            target_id=str(target_id) if target_id is not None else None,
            details=canonical_details(details),
            prev_hash=head.last_hash,
        )
        entry.entry_hash = compute_hash(entry)
        head.seq = entry.seq
        head.last_hash = entry.entry_hash
        audit_repository.add(session, entry)
        await session.flush()
        return entry

    async def list_for_tenant(
        self,
        session: AsyncSession,
        tenant_id: int,
        flt: AuditFilter,
        *,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[AuditEntry], int]:
        """A tenant's entries, newest first."""
        return await audit_repository.list_for_tenant(
            session, tenant_id, flt, limit=limit, offset=offset
        )

    async def verify(
        self, session: AsyncSession, chains: Sequence[str] | None = None
    ) -> VerifyReport:
        """Verify the given chains (all when None); reports the first broken entry."""
        secret = audit_secret_of(session)
        names = list(chains) if chains is not None else await audit_repository.chain_names(session)
        entries = 0
        first_bad: BadEntry | None = None
        for name in names:
            verifier = ChainVerifier(chain=name, secret=secret)
            async for batch in audit_repository.iter_chain(session, name):
                verifier.feed(batch)
            head = await audit_repository.head(session, name)
            verifier.finish(head.seq if head else None, head.last_hash if head else None)
            entries += verifier.entries
            if first_bad is None:
                first_bad = verifier.first_bad
        return VerifyReport(ok=first_bad is None, entries=entries, first_bad=first_bad)


audit_service = AuditService()


def details_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry's details as a dict."""
    value = json.loads(entry.details)
    return value if isinstance(value, dict) else {}
