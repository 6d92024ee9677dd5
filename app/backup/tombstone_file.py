"""Tombstone records and the files that hold them (the journal, a backup's tombstones.jsonl).

Tombstones: every purge, erasure and tenant deletion, remembered where a restore will find it.

A tombstone is written in the transaction that completes a purge or an erasure: as a row of
`tombstones` (so every later backup carries it) and, before that transaction commits, as a
line appended and fsynced to the journal (`backup.dir`/tombstones.jsonl, 0600), which lives
outside the data dir and outside any backup. Restoring a backup taken before the deletion
finds it in the journal and deletes again (app/backup/restore.py).

The journal is written first on purpose: a crash between the append and the commit leaves a
tombstone for a deletion that was asked for and not finished, and a restore finishes it; the
other order could lose the only record of a deletion that did happen.

Tombstones hold ids and hashes only: kind, tenant id, subject id and a digest (a document's
content SHA-256; the SHA-256 of an erased account's random `subject`; the SHA-256 of a deleted
tenant's id and slug). The digest makes a
replay touch only the row that was deleted, never a later row that got the same id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from app.kit.files import PRIVATE_FILE_MODE, private_dir
from app.models.base import utcnow

TombstoneKind = Literal["document", "user", "tenant"]
KINDS: tuple[TombstoneKind, ...] = ("document", "user", "tenant")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TombstoneFileError(ValueError):
    """A tombstone file with a line that is not a tombstone."""


@dataclass(frozen=True)
class TombstoneRecord:
    kind: TombstoneKind
    tenant_id: int | None
    subject_id: int
    digest: str | None
    recorded_at: str  # ISO 8601, UTC

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.subject_id)

    def to_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")) + "\n"

    @classmethod
    def parse(cls, data: object) -> TombstoneRecord:
        """A record from its JSON object; ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        kind, tenant, subject = data.get("kind"), data.get("tenant_id"), data.get("subject_id")
        digest, recorded = data.get("digest"), data.get("recorded_at")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        if type(subject) is not int or (tenant is not None and type(tenant) is not int):
            raise ValueError("ids must be integers")
        if digest is not None and (not isinstance(digest, str) or not _HEX64.match(digest)):
            raise ValueError("digest must be a SHA-256 hex digest")
        if not isinstance(recorded, str):
            raise ValueError("recorded_at must be a string")
        datetime.fromisoformat(recorded)
        return cls(kind, tenant, subject, digest, recorded)


def tenant_digest(tenant_id: int, slug: str) -> str:
    """What a deleted tenant's tombstone holds of it (slugs are unique and never change)."""
    return hashlib.sha256(f"tenant:{tenant_id}:{slug}".encode()).hexdigest()


def user_digest(subject: str) -> str:
    """What a user's tombstone holds of the account: the hash of its random subject."""
    return hashlib.sha256(f"user-subject:{subject}".encode()).hexdigest()


def new_record(
    kind: TombstoneKind, *, tenant_id: int | None, subject_id: int, digest: str | None
) -> TombstoneRecord:
    return TombstoneRecord(kind, tenant_id, subject_id, digest, utcnow().isoformat())


def append(path: Path, records: Iterable[TombstoneRecord]) -> None:
    """Append records to a tombstone file (created 0600), durably: fsynced before returning.
    One write per call, in append mode, so concurrent writers never interleave a line."""
    data = "".join(r.to_line() for r in records).encode()
    if not data:
        return
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> list[TombstoneRecord]:
    """The records of a tombstone file (none when it does not exist). A last line cut short
    (a crash mid-append) is skipped; any other bad line is a TombstoneFileError."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    records: list[TombstoneRecord] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(TombstoneRecord.parse(json.loads(line)))
        except ValueError as exc:
            if number == len(lines):
                continue  # torn final line: its deletion was never committed either
            raise TombstoneFileError(f"{path}: line {number} is not a tombstone ({exc})") from exc
    return records


def merge(*sources: Iterable[TombstoneRecord]) -> list[TombstoneRecord]:
    """One record per (kind, subject), the earliest kept, oldest first."""
    chosen: dict[tuple[str, int], TombstoneRecord] = {}
    for source in sources:
        for record in source:
            known = chosen.get(record.key)
            if known is None or record.recorded_at < known.recorded_at:
                chosen[record.key] = record
    return sorted(chosen.values(), key=lambda r: (r.recorded_at, r.kind, r.subject_id))
