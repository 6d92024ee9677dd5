"""Who did something, as the audit log records it: a person, or the server itself under a name.

There is no magic user id for the server's own work (no user 0, no -1): the CLI, the workers
and the scheduled jobs act as a `SystemActor`, which the audit log stores by its name
("system:retention_purge") beside a keyed commitment to that name (app/audit/chain.py), so a
reader sees "System: retention purge" where an entry once showed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The prefix of a system actor's stored name (audit_entries.actor_name). Usernames cannot hold
# ":" (app/users/schemas.py), so no person's name is ever read as a system actor's.
SYSTEM_PREFIX = "system:"


@dataclass(frozen=True)
class UserActor:
    """A person, by account id and username (as they were when acting)."""

    user_id: int
    username: str


class SystemActor(StrEnum):
    """The server acting on its own, named for the work it does."""

    # A `cairn` command run by whoever operates the server (members, tenants, users, purge).
    OPERATOR = "operator"
    # `cairn ingest` and other bulk loads of files.
    BULK_IMPORT = "bulk_import"
    # The scheduled purge of documents past their retention window.
    RETENTION_PURGE = "retention_purge"
    # The purge worker, finishing a purge whose requester can no longer be named.
    PURGE = "purge"
    # `cairn restore`, re-applying purges and deletions done after the backup was taken.
    RESTORE = "restore"
    # The sign-in guard, refusing a username that names no account.
    SIGN_IN = "sign_in"

    @property
    def stored_name(self) -> str:
        """The name the audit log stores for this actor."""
        return f"{SYSTEM_PREFIX}{self.value}"

    @classmethod
    def from_stored(cls, name: str | None) -> SystemActor | None:
        """The system actor a stored actor name names, if it names one."""
        if name is None or not name.startswith(SYSTEM_PREFIX):
            return None
        try:
            return cls(name[len(SYSTEM_PREFIX) :])
        except ValueError:
            return None


Actor = UserActor | SystemActor


def user_id_of(actor: Actor) -> int | None:
    """The account behind the actor; None for the server's own work."""
    return actor.user_id if isinstance(actor, UserActor) else None


def stored_actor(actor_id: int | None, actor_name: str | None) -> Actor | None:
    """The actor an audit entry's readable columns name; None when they name nobody (blanked
    by an erasure, or an entry from before actors were named)."""
    if actor_id is None:
        return SystemActor.from_stored(actor_name)
    if actor_name is None:
        return None
    return UserActor(actor_id, actor_name)
