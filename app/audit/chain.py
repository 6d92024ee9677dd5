"""The audit hash chain: what each entry's hash covers, and how a chain is verified.

entry_hash = SHA-256(prev_hash || "\\n" || canonical JSON of the entry's content). The content
holds a keyed commitment to the actor (HMAC of "id:username"), never the readable actor: erasing
a person blanks the readable columns beside it and leaves every hash valid. While the readable
actor is present, verification recomputes the commitment, so editing it is detected too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


def canonical_details(details: dict[str, Any] | None) -> str:
    """Details as canonical JSON text (sorted keys, no whitespace)."""
    return json.dumps(details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compute_hash(entry: AuditEntry) -> str:
    """The hash an entry must carry, given its content and prev_hash."""
    content = {
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
    """Feed one chain's entries in seq order; it remembers the first broken link."""

    chain: str
    secret: str
    expected_seq: int = 1
    prev_hash: str = GENESIS_HASH
    entries: int = 0
    first_bad: BadEntry | None = None

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
        if entry.actor_id is not None or entry.actor_name is not None:
            if entry.actor_id is None or entry.actor_name is None or entry.actor_commitment is None:
                return "actor partially blanked"
            expected = actor_commitment(self.secret, entry.actor_id, entry.actor_name)
            if expected != entry.actor_commitment:
                return "actor does not match its commitment"
        return None

    def finish(self, head_seq: int | None, head_hash: str | None) -> None:
        """Compare the last entry seen with the chain head (detects a truncated tail)."""
        if self.first_bad is not None or head_seq is None:
            return
        if head_seq != self.expected_seq - 1 or head_hash != self.prev_hash:
            self.first_bad = BadEntry(
                self.chain, head_seq, None, "chain head does not match the last entry"
            )
