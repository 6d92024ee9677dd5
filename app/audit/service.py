"""The audit service: every state change and every login is recorded through `record`.

Every `worker.audit_checkpoint_entries`-th entry of a chain also queues an `audit_checkpoint`
job in the same transaction (app/audit/checkpoints.py), so no chain runs more than that many
entries ahead of its last signed checkpoint for longer than a job takes to start; the periodic
run every `worker.audit_checkpoint_seconds` bounds the time a quiet chain waits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.chain import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    BadEntry,
    ChainVerifier,
    actor_commitment,
    canonical_details,
    compute_hash,
    entry_seal,
    system_commitment,
    tenant_chain,
)
from app.audit.checkpoints import (
    Checkpoint,
    CheckpointLog,
    CheckpointVerifier,
    checkpoint_file_problem,
    key_id_of,
    load_checkpoints,
    public_key_pem,
)
from app.audit.repository import AuditFilter, audit_repository
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.kit.actor import Actor, SystemActor, UserActor, stored_actor
from app.kit.authz import PLATFORM_DOMAIN, Enforcer, TenantAccess, domain_of
from app.kit.db import Database
from app.kit.metrics import AUDIT_VERIFY_OK
from app.kit.principal import Principal
from app.kit.request_context import current_request_id
from app.models import AuditChainHead, AuditEntry, Job
from app.models.base import utcnow
from app.tenants.repository import tenant_repository
from app.users.repository import user_repository

# Keys whose values must never land in the log, whatever a caller passes.
_FORBIDDEN_DETAIL_KEYS = frozenset(
    {"password", "token", "key", "secret", "text", "query", "question", "content", "answer"}
)

DetailValue = str | int | float | bool | None | list[str] | list[int]


# session.info key (app.kit.db.database_for): a checkpoint is queued every this many entries
# of a chain (0 or absent: never on count, only periodically).
CHECKPOINT_EVERY_KEY = "audit_checkpoint_entries"
# Pseudonymising a person's entries reads and rewrites them this many at a time.
_PSEUDONYMISE_BATCH = 1000


def audit_secret_of(session: AsyncSession) -> str:
    """The deployment's audit key, carried in session.info by app.kit.db.Database."""
    secret = session.info.get("audit_secret")
    if not isinstance(secret, str) or not secret:
        raise RuntimeError("session has no audit_secret; create it through app.kit.db.Database")
    return secret


@dataclass(frozen=True)
class AuditQuery:
    """What a reader asks of a tenant's log (the listing's and the export's filters)."""

    action: str | None = None
    actor: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def filtered(self) -> bool:
        return any(
            v is not None and v != ""
            for v in (
                self.action,
                self.actor,
                self.target_type,
                self.target_id,
                self.since,
                self.until,
            )
        )


ActorKind = Literal["user", "system", "erased", "outside", "none"]


@dataclass(frozen=True)
class ShownActor:
    """An entry's actor as one reader may see it: `name` is the username (a person the reader
    may see), the system actor's name, the erased person's pseudonym; None otherwise."""

    kind: ActorKind
    name: str | None = None


@dataclass(frozen=True)
class ShownEntry:
    entry: AuditEntry
    actor: ShownActor


def shown_actor(entry: AuditEntry, visible: Collection[int]) -> ShownActor:
    """The entry's actor for a reader who may see the people in `visible` by name."""
    actor = stored_actor(entry.actor_id, entry.actor_name)
    if isinstance(actor, UserActor):
        if actor.user_id in visible:
            return ShownActor("user", actor.username)
        return ShownActor("outside")
    if actor is not None:
        return ShownActor("system", actor.value)
    if entry.actor_commitment is not None:
        # Blanked by an erasure: a pseudonym that only tells this person's entries apart.
        return ShownActor("erased", f"erased:{entry.actor_commitment[:12]}")
    return ShownActor("none")


@dataclass(frozen=True)
class _Reader:
    """Whose view of a tenant's log: which tenant, and whether every account may be named."""

    tenant_id: int
    sees_everyone: bool

    @classmethod
    def of(cls, access: TenantAccess) -> _Reader:
        return cls(access.tenant_id, access.principal.is_platform_admin)


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    first_bad: BadEntry | None
    checkpoints: int = 0


class _Persons:
    """Which actor commitments belong to nobody any more, for unsealed (pre-0011) entries whose
    actor is blanked: an erasure blanks every entry of the person and deletes the account, so
    a commitment still carried by an account or by a readable entry was blanked by someone
    else. The accounts' commitments are computed once per verification, and only if needed."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._accounts: set[str] | None = None

    async def gone(self, session: AsyncSession, commitments: Collection[str]) -> set[str]:
        candidates = set(commitments)
        candidates -= await audit_repository.readable_commitments(session, candidates)
        if candidates and self._accounts is None:
            self._accounts = {
                actor_commitment(self.secret, user_id, username)
                for user_id, username in await audit_repository.accounts(session)
            }
        return candidates - (self._accounts or set())


def _earliest(walk: BadEntry | None, anchors: BadEntry | None) -> BadEntry | None:
    if walk is None or (anchors is not None and anchors.seq < walk.seq):
        return anchors
    return walk


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
        actor: Actor | Principal,
        tenant_id: int | None = None,
        target_type: str | None = None,
        target_id: str | int | None = None,
        details: dict[str, DetailValue] | None = None,
        outcome: str = "success",
    ) -> AuditEntry:
        """Append an entry to the tenant's chain (or the global one) in the caller's transaction.

        Details hold ids and enums only: no document text, query text, secrets or names (names
        would survive a person's erasure inside the hash). Inside an HTTP request the request's
        id is added as `request_id` (so the entry can be matched with the access log line).
        """
        if details and _FORBIDDEN_DETAIL_KEYS.intersection(details):
            raise ValueError(f"audit details may not carry {_FORBIDDEN_DETAIL_KEYS & set(details)}")
        request_id = current_request_id()
        if request_id is not None:
            details = {**(details or {}), "request_id": request_id}
        if isinstance(actor, Principal):
            actor = actor.actor
        secret = audit_secret_of(session)
        if isinstance(actor, UserActor):
            actor_id: int | None = actor.user_id
            actor_name = actor.username
            commitment = actor_commitment(secret, actor.user_id, actor.username)
        else:
            actor_id, actor_name = None, actor.stored_name
            commitment = system_commitment(secret, actor)
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
            actor_id=actor_id,
            actor_name=actor_name,
            actor_commitment=commitment,
            target_type=target_type,
            target_id=str(target_id) if target_id is not None else None,
            details=canonical_details(details),
            prev_hash=head.last_hash,
        )
        entry.entry_hash = compute_hash(entry, sealed=True)
        entry.seal = entry_seal(secret, entry.entry_hash)
        head.seq = entry.seq
        head.last_hash = entry.entry_hash
        audit_repository.add(session, entry)
        every = session.info.get(CHECKPOINT_EVERY_KEY)
        if isinstance(every, int) and every > 0 and entry.seq % every == 0:
            await self._queue_checkpoint(session)
        await session.flush()
        return entry

    async def _queue_checkpoint(self, session: AsyncSession) -> None:
        # In the entry's transaction: the job exists exactly when the entry does. One queued
        # job covers every chain, so another is only added once that one has started.
        if not await job_repository.queued_of_kind(session, JobKind.AUDIT_CHECKPOINT.value):
            job_repository.add(session, Job(kind=JobKind.AUDIT_CHECKPOINT.value, tenant_id=None))

    async def pseudonymise_actor(self, session: AsyncSession, user_id: int) -> int:
        """Erase the readable actor from every entry the user acted in; how many changed.

        The commitment inside each hash stays, so every chain still verifies, and each entry is
        re-sealed as erased: the seal (keyed with the audit secret) is what tells this erasure
        from actor columns blanked in the database. Entries from before revision 0011 have no
        seal and get none (sealing one would break the rule that they only precede sealed
        entries); verification accepts them blanked while the person has no account left.
        """
        secret = audit_secret_of(session)
        changed = 0
        while True:
            rows = await audit_repository.acted_by(session, user_id, limit=_PSEUDONYMISE_BATCH)
            if not rows:
                return changed
            await audit_repository.blank_actor(
                session,
                {
                    entry_id: None if seal is None else entry_seal(secret, hashed, erased=True)
                    for entry_id, hashed, seal in rows
                },
            )
            changed += len(rows)

    async def purge_requested_by(
        self, session: AsyncSession, tenant_id: int, document_id: int
    ) -> Actor | None:
        """Who the newest purge request of the document names, if anyone (nobody: the entry's
        person was erased since)."""
        row = await audit_repository.last_actor(
            session,
            tenant_id,
            action="document.purge_request",
            target_type="document",
            target_id=str(document_id),
        )
        return None if row is None else stored_actor(*row)

    async def purge_requester(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> ShownActor:
        """Who asked for the document's purge, as this reader may see them."""
        actor = await self.purge_requested_by(session, access.tenant_id, document_id)
        if isinstance(actor, UserActor):
            if await self._visible(session, _Reader.of(access), {actor.user_id}):
                return ShownActor("user", actor.username)
            return ShownActor("outside")
        return ShownActor("none") if actor is None else ShownActor("system", actor.value)

    async def list_for_tenant(
        self,
        session: AsyncSession,
        access: TenantAccess,
        query: AuditQuery,
        *,
        limit: int,
        offset: int,
    ) -> tuple[list[ShownEntry], int]:
        """A tenant's entries, newest first, each actor as this reader may see it."""
        flt = await self._filter(session, access, query)
        if flt is None:
            return [], 0
        entries, total = await audit_repository.list_for_tenant(
            session, access.tenant_id, flt, limit=limit, offset=offset
        )
        return await self._shown(session, _Reader.of(access), entries), total

    async def export(
        self,
        session: AsyncSession,
        database: Database,
        access: TenantAccess,
        query: AuditQuery,
        *,
        fmt: str,
    ) -> AsyncIterator[ShownEntry]:
        """Record the export (in the caller's transaction), then: every matching entry of the
        tenant up to and including that record, oldest first, read in batches as the caller
        consumes them (after its transaction has committed)."""
        flt = await self._filter(session, access, query)
        recorded = await self.record(
            session,
            action="audit.export",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="audit",
            details={"format": fmt, "filtered": query.filtered},
        )
        # Plain values only from here: the request's ORM objects expire when it commits.
        return self._export_rows(database, _Reader.of(access), flt, upto=recorded.seq)

    async def _export_rows(
        self, database: Database, reader: _Reader, flt: AuditFilter | None, *, upto: int
    ) -> AsyncIterator[ShownEntry]:
        if flt is None:
            return
        batches = audit_repository.tenant_batches(
            database.read_sessionmaker, reader.tenant_id, flt, upto=upto
        )
        async for batch in batches:
            async with database.read_sessionmaker() as session:
                shown = await self._shown(session, reader, batch)
            for row in shown:
                yield row

    async def _filter(
        self, session: AsyncSession, access: TenantAccess, query: AuditQuery
    ) -> AuditFilter | None:
        """The query as a filter; None when it names an actor this reader may not see (or
        nobody), which matches nothing."""
        actor: Actor | None = None
        if query.actor:
            actor = SystemActor.from_stored(query.actor)
            if actor is None:
                user = await user_repository.get_by_username(session, query.actor.lower())
                visible = user and await self._visible(session, _Reader.of(access), {user.id})
                if user is None or not visible:
                    return None
                actor = UserActor(user.id, user.username)
        return AuditFilter(
            action=query.action,
            actor=actor,
            target_type=query.target_type,
            target_id=query.target_id,
            since=query.since,
            until=query.until,
        )

    async def _visible(
        self, session: AsyncSession, reader: _Reader, user_ids: set[int]
    ) -> set[int]:
        """Those of the users this reader may see by name: the tenant's members (a platform
        admin may see every account anyway)."""
        if reader.sees_everyone:
            return user_ids
        return await audit_repository.members_among(session, reader.tenant_id, user_ids)

    async def _shown(
        self, session: AsyncSession, reader: _Reader, entries: Sequence[AuditEntry]
    ) -> list[ShownEntry]:
        visible = await self._visible(
            session, reader, {e.actor_id for e in entries if e.actor_id is not None}
        )
        return [ShownEntry(e, shown_actor(e, visible)) for e in entries]

    async def verify(
        self,
        session: AsyncSession,
        chains: Sequence[str] | None = None,
        *,
        checkpoints: CheckpointLog,
    ) -> VerifyReport:
        """Verify the given chains (all when None): walk each hash chain and check each signed
        checkpoint of it; reports the lowest bad position of the first chain with a problem.

        With every chain (None), chains that only the checkpoint file still knows (deleted with
        their head row) and unreadable lines of the file are checked too.
        """
        secret = audit_secret_of(session)
        scope = set(chains) if chains is not None else None
        signed = await asyncio.to_thread(load_checkpoints, checkpoints, scope)
        if chains is None:
            stored = await audit_repository.chain_names(session)
            names = sorted(set(stored) | set(signed.by_chain))
        else:
            names = list(chains)
        entries = 0
        first_bad: BadEntry | None = None
        persons = _Persons(secret)
        for name in names:
            verifier = ChainVerifier(chain=name, secret=secret)
            anchors = CheckpointVerifier(chain=name, checkpoints=signed.by_chain.get(name, []))
            async for batch in audit_repository.iter_chain(session, name):
                verifier.feed(batch)
                anchors.feed(batch)
            head = await audit_repository.head(session, name)
            verifier.finish(head.seq if head else None, head.last_hash if head else None)
            if verifier.unsealed_blanked:
                verifier.settle_unsealed(
                    await persons.gone(session, verifier.unsealed_blanked.keys())
                )
            anchors.finish(head)
            entries += verifier.entries
            if first_bad is None:
                first_bad = _earliest(verifier.first_bad, anchors.first_bad)
        if first_bad is None:
            first_bad = checkpoint_file_problem(checkpoints, signed.unreadable)
        AUDIT_VERIFY_OK.labels("verify").set(1 if first_bad is None else 0)
        return VerifyReport(
            ok=first_bad is None, entries=entries, first_bad=first_bad, checkpoints=signed.count
        )

    async def verifiable_chains(
        self, session: AsyncSession, principal: Principal, enforcer: Enforcer
    ) -> list[str]:
        """The chains the principal may verify: each tenant's where it holds audit verification,
        plus the platform chain for platform admins. Others are not touched, so not even their
        entry counts leak."""
        chains: list[str] = []
        if enforcer.allowed(principal.user_id, PLATFORM_DOMAIN, "audit", "verify"):
            chains.append(GLOBAL_CHAIN)
        rows, _ = await tenant_repository.list_readable(session, principal, limit=10_000, offset=0)
        for tenant, _role in rows:
            if enforcer.allowed(principal.user_id, domain_of(tenant.id), "audit", "verify"):
                chains.append(tenant_chain(tenant.id))
        return chains

    async def list_checkpoints(
        self,
        log: CheckpointLog,
        chains: Collection[str],
        *,
        chain: str | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[Checkpoint], int]:
        """The signed checkpoints of these chains, oldest first (so a witness can page on by
        offset as the file grows); `chain` narrows them to one chain by its public name."""
        wanted = {log.names.public(name) for name in chains}
        if chain is not None:
            wanted &= {chain}
        lines = await asyncio.to_thread(log.read)
        items = [c for _, c in lines if c is not None and c.chain in wanted]
        return items[offset : offset + limit], len(items)

    async def public_key(self, log: CheckpointLog) -> tuple[str, str]:
        """The key checkpoints are verified with: (key_id, PEM)."""
        key = await asyncio.to_thread(log.verify_key)
        return key_id_of(key), public_key_pem(key)


audit_service = AuditService()


def details_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry's details as a dict."""
    value = json.loads(entry.details)
    return value if isinstance(value, dict) else {}
