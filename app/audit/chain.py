"""The audit hash chain: what each entry's hash covers, and how a chain is verified.

entry_hash = SHA-256(prev_hash || "\\n" || canonical JSON of the entry's content). The content
holds a keyed commitment to the actor (HMAC of "id:username"), never the readable actor, so
erasing a person can blank the readable columns beside it and leave every hash valid. While the
readable actor is present, verification recomputes the commitment, so editing it is detected.
The server's own work (app/kit/actor.py) is stored with no actor id, its name ("system:...")
as the readable actor and a keyed commitment to that name, checked the same way.

The hash alone is public arithmetic: whoever can write the database can edit an entry and
recompute every later hash. So each entry also carries a seal, an HMAC under the deployment's
audit secret (never in the database) of its hash and of its actor's state:

    seal = HMAC(audit_secret, "seal:entry:" + entry_hash)    as written
    seal = HMAC(audit_secret, "seal:erased:" + entry_hash)   once an erasure blanked the actor

Without the secret a database writer can neither seal a rewritten entry nor pass off blanked
actor columns as an erasure: only the server's erasure re-seals an entry as erased. A sealed
entry's hashed content also holds "sealed": true, so its seal cannot be dropped either (to pass
it off as an old entry) without changing its hash, which a signed checkpoint then contradicts.

Entries written before revision 0011 carry no seal (NULL) and no such key; they verify by hash
and commitment, may only precede the chain's first sealed entry, and one of them with a blanked
actor passes only while no account and no readable entry carries its commitment (the person is
gone, as an erasure leaves it). Signed checkpoints (app/audit/checkpoints.py) cover what a
holder of the secret, or a deletion of the newest entries, could still do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.kit.actor import SystemActor
from app.kit.security import keyed_digest
from app.models import AuditEntry

GENESIS_HASH = "0" * 64
GLOBAL_CHAIN = "global"


def tenant_chain(tenant_id: int) -> str:
    """The chain that holds a tenant's entries."""
    return f"tenant:{tenant_id}"


def actor_commitment(secret: str, user_id: int, username: str) -> str:
    """Keyed commitment to an actor; unlinkable without the deployment's audit secret."""
    return keyed_digest(secret, f"{user_id}:{username}")


def system_commitment(secret: str, actor: SystemActor) -> str:
    """Keyed commitment to a system actor (its stored name holds a ":" no user id part can)."""
    return keyed_digest(secret, actor.stored_name)


def entry_seal(secret: str, entry_hash: str, *, erased: bool = False) -> str:
    """The seal an entry with this hash carries: as written, or once its actor was erased."""
    state = "erased" if erased else "entry"
    return keyed_digest(secret, f"seal:{state}:{entry_hash}")


def canonical_details(details: dict[str, Any] | None) -> str:
    """Details as canonical JSON text (sorted keys, no whitespace)."""
    return json.dumps(details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compute_hash(entry: AuditEntry, *, sealed: bool | None = None) -> str:
    """The hash an entry must carry, given its content and prev_hash; `sealed` (default:
    whether it has a seal) says whether it was written sealed, since revision 0011."""
    content: dict[str, Any] = {
        "chain": entry.chain,
        "seq": entry.seq,
        "created_at": _timestamp(entry.created_at),
        "action": entry.action,
        "outcome": entry.outcome,
        "tenant_id": entry.tenant_id,
        "actor": entry.actor_commitment,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "details": entry.details,
    }
    if sealed is None:
        sealed = entry.seal is not None
    if sealed:
        content["sealed"] = True
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{entry.prev_hash}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class BadEntry:
    chain: str
    seq: int
    id: int | None
    reason: str


@dataclass
class ChainVerifier:
    """Feed one chain's entries in seq order; it remembers the first broken link.

    Unsealed entries with a blanked actor (erasures from before revision 0011) cannot be judged
    from the chain alone: their commitments are collected in `unsealed_blanked`, and the caller
    settles them with `settle_unsealed` once it knows which persons are gone."""

    chain: str
    secret: str
    expected_seq: int = 1
    prev_hash: str = GENESIS_HASH
    entries: int = 0
    first_bad: BadEntry | None = None
    # commitment -> the first unsealed entry (seq, id) that carries it with a blanked actor.
    unsealed_blanked: dict[str, tuple[int, int]] = field(default_factory=dict)
    _sealed: bool = field(default=False, init=False)

    def feed(self, entries: Iterable[AuditEntry]) -> None:
        """Check the next entries of the chain."""
        for entry in entries:
            self.entries += 1
            if self.first_bad is not None:
                continue
            reason = self._problem(entry)
            if reason is not None:
                # A gap is reported at the missing position, anything else at the entry itself.
                seq = min(entry.seq, self.expected_seq)
                self.first_bad = BadEntry(self.chain, seq, entry.id, reason)
            self.expected_seq = entry.seq + 1
            self.prev_hash = entry.entry_hash

    def _problem(self, entry: AuditEntry) -> str | None:
        if entry.seq != self.expected_seq:
            return f"sequence gap: expected {self.expected_seq}, found {entry.seq}"
        if entry.prev_hash != self.prev_hash:
            return "previous-hash link broken"
        if compute_hash(entry) != entry.entry_hash:
            return "content does not match its hash"
        readable = entry.actor_id is not None or entry.actor_name is not None
        if entry.seal is None:
            if self._sealed:
                return "seal missing after sealed entries"
            if not readable and entry.actor_commitment is not None:
                self.unsealed_blanked.setdefault(entry.actor_commitment, (entry.seq, entry.id))
                return None
        else:
            self._sealed = True
            problem = self._seal_problem(entry, blanked=not readable)
            if problem is not None:
                return problem
        if readable:
            if entry.actor_commitment is None:
                return "actor added to an entry without one"
            system = SystemActor.from_stored(entry.actor_name)
            if entry.actor_id is None and system is not None:
                expected = system_commitment(self.secret, system)
            elif entry.actor_id is None or entry.actor_name is None:
                return "actor partially blanked"
            else:
                expected = actor_commitment(self.secret, entry.actor_id, entry.actor_name)
            if expected != entry.actor_commitment:
                return "actor does not match its commitment"
        return None

    def _seal_problem(self, entry: AuditEntry, *, blanked: bool) -> str | None:
        assert entry.seal is not None
        if blanked and entry.actor_commitment is not None:
            erased = entry_seal(self.secret, entry.entry_hash, erased=True)
            if hmac.compare_digest(entry.seal, erased):
                return None
            return "actor blanked without an erasure"
        if hmac.compare_digest(entry.seal, entry_seal(self.secret, entry.entry_hash)):
            return None
        if hmac.compare_digest(entry.seal, entry_seal(self.secret, entry.entry_hash, erased=True)):
            return "erased actor written back"
        return "seal does not match the entry"

    def settle_unsealed(self, gone: Collection[str]) -> None:
        """Report the first unsealed blanked entry whose person is not gone (`gone`: the
        commitments of `unsealed_blanked` that no account and no readable entry carries)."""
        kept = [pos for c, pos in self.unsealed_blanked.items() if c not in gone]
        if not kept:
            return
        seq, entry_id = min(kept)
        if self.first_bad is None or seq < self.first_bad.seq:
            self.first_bad = BadEntry(
                self.chain, seq, entry_id, "actor blanked, but the person was not erased"
            )

    def finish(self, head_seq: int | None, head_hash: str | None) -> None:
        """Compare the last entry seen with the chain head (detects a truncated tail)."""
        if self.first_bad is not None or head_seq is None:
            return
        if head_seq != self.expected_seq - 1 or head_hash != self.prev_hash:
            self.first_bad = BadEntry(
                self.chain, head_seq, None, "chain head does not match the last entry"
            )
