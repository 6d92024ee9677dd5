"""Signed checkpoints of the audit chains: what a database writer cannot rewrite unnoticed.

The hash chain (app/audit/chain.py) shows that one row was edited, but whoever can write the
database can recompute every hash after an edit, or delete a chain together with its head row.
A checkpoint pins a chain's head outside the database. It is one JSON line

    {"chain", "seq", "head_hash", "time", "key_id", "signature"}

appended to a file outside the database (`audit_checkpoint_file`), where `signature` is the
base64 Ed25519 signature of

    b"cairn-audit-checkpoint-v1\\n" + canonical JSON of {"chain", "head_hash", "seq", "time"}

(sorted keys, no whitespace, ASCII) and `key_id` is the first 16 hex digits of SHA-256 of the
raw 32-byte public key. Chains are named as the API shows them ("global", "tenant:ten_…"), so
a checkpoint fetched from the API verifies as it is; the signing key is never in the database.

Invariants:
- the file is only appended to (O_APPEND, one write per batch, fsync) and is 0600;
- a checkpoint is signed only for a head that extends its chain's previous checkpoint, so a
  chain rewritten in the database is never blessed by a later signature;
- verification checks every checkpoint: its signature, that the entry at its seq still
  carries the signed hash, and that the chain (head included) still reaches that seq. Entries
  newer than a chain's last checkpoint are covered by the hash chain and their keyed seals
  alone: there, deleting the newest entries (and moving the head back), or a rewrite by
  someone holding the audit secret, goes unseen. Checkpoints come every
  `worker.audit_checkpoint_seconds` and every `worker.audit_checkpoint_entries` entries of a
  chain, which bounds that window.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.chain import GENESIS_HASH, GLOBAL_CHAIN, BadEntry
from app.audit.repository import audit_repository
from app.kit.files import PRIVATE_FILE_MODE, create_private_file, private_dir
from app.kit.metrics import AUDIT_VERIFY_OK
from app.kit.public_ids import IdKind, PublicIds
from app.kit.settings import InsecureConfiguration, Settings
from app.models import AuditChainHead, AuditEntry
from app.models.base import utcnow

logger = logging.getLogger(__name__)

SIGNING_CONTEXT = b"cairn-audit-checkpoint-v1\n"
DEV_KEY_FILE = ".audit_signing_key"
DEFAULT_CHECKPOINT_FILE = "audit-checkpoints.jsonl"
# The pseudo-chain under which unreadable lines of the checkpoint file are reported.
CHECKPOINT_FILE_CHAIN = "checkpoint-file"
_TENANT_PREFIX = "tenant:"
_HEX = frozenset("0123456789abcdef")


def signing_payload(chain: str, seq: int, head_hash: str, time: str) -> bytes:
    """The bytes a checkpoint's signature covers."""
    body = {"chain": chain, "seq": seq, "head_hash": head_hash, "time": time}
    return SIGNING_CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Names a public key: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), for a witness."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class Checkpoint:
    """One signed line of the checkpoint file; `chain` is the chain's public name."""

    chain: str
    seq: int
    head_hash: str
    time: str
    key_id: str
    signature: str

    def payload(self) -> bytes:
        return signing_payload(self.chain, self.seq, self.head_hash, self.time)

    def to_line(self) -> str:
        fields = {
            "chain": self.chain,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "time": self.time,
            "key_id": self.key_id,
            "signature": self.signature,
        }
        return json.dumps(fields, separators=(",", ":")) + "\n"

    @classmethod
    def parse(cls, line: str) -> Checkpoint | None:
        """The checkpoint on a line, or None when the line is not one."""
        try:
            value: Any = json.loads(line)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        seq = value.get("seq")
        head_hash = value.get("head_hash")
        strings = [value.get(k) for k in ("chain", "time", "key_id", "signature")]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            return None
        if not isinstance(head_hash, str) or len(head_hash) != 64 or set(head_hash) - _HEX:
            return None
        if not all(isinstance(s, str) and s for s in strings):
            return None
        return cls(
            chain=value["chain"],
            seq=seq,
            head_hash=head_hash,
            time=value["time"],
            key_id=value["key_id"],
            signature=value["signature"],
        )


def _key_bytes(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_private_key(text: str, source: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or base64 of its 32-byte seed."""
    text = text.strip()
    key: object = None
    if text.startswith("-----BEGIN"):
        # An environment variable may carry the PEM's line breaks as "\n".
        try:
            key = serialization.load_pem_private_key(
                text.replace("\\n", "\n").encode(), password=None
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None
    else:
        raw = _key_bytes(text)
        if raw is not None and len(raw) == 32:
            key = Ed25519PrivateKey.from_private_bytes(raw)
    if not isinstance(key, Ed25519PrivateKey):
        raise InsecureConfiguration(
            f"{source} is not an Ed25519 private key (unencrypted PEM, or base64 of 32 bytes)"
        )
    return key


def parse_public_key(text: str, source: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or base64 of its 32 bytes."""
    text = text.strip()
    key: object = None
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.replace("\\n", "\n").encode())
        except (ValueError, UnsupportedAlgorithm):
            key = None
    else:
        raw = _key_bytes(text)
        if raw is not None and len(raw) == 32:
            key = Ed25519PublicKey.from_public_bytes(raw)
    if not isinstance(key, Ed25519PublicKey):
        raise InsecureConfiguration(
            f"{source} is not an Ed25519 public key (PEM, or base64 of 32 bytes)"
        )
    return key


class ChainNames:
    """Chain names as stored ("tenant:12") and as signed and shown ("tenant:ten_…")."""

    def __init__(self, ids: PublicIds) -> None:
        self._ids = ids

    def public(self, chain: str) -> str:
        if not chain.startswith(_TENANT_PREFIX):
            return chain
        key = chain[len(_TENANT_PREFIX) :]
        if not key.isdigit():
            return chain
        return _TENANT_PREFIX + self._ids.encode(IdKind.TENANT, int(key))

    def stored(self, public: str) -> str | None:
        """The stored name behind a public chain name; None for a name no chain can have."""
        if public == GLOBAL_CHAIN:
            return public
        if not public.startswith(_TENANT_PREFIX):
            return None
        key = self._ids.decode(IdKind.TENANT, public[len(_TENANT_PREFIX) :])
        return None if key is None else f"{_TENANT_PREFIX}{key}"


class CheckpointLog:
    """The checkpoint file and the keys of one deployment. Methods here block (file I/O and
    signatures): async callers run them with asyncio.to_thread."""

    def __init__(self, settings: Settings, *, path: Path | None = None) -> None:
        self.settings = settings
        self.path = (
            path or settings.audit_checkpoint_file or (settings.data_dir / DEFAULT_CHECKPOINT_FILE)
        )
        self.names = ChainNames(PublicIds(settings.secret("audit_secret")))

    def signing_key(self) -> Ed25519PrivateKey:
        """The configured signing key; outside production one generated once into data_dir."""
        settings = self.settings
        if settings.audit_signing_key:
            return parse_private_key(settings.audit_signing_key, "CAIRN_AUDIT_SIGNING_KEY")
        if settings.audit_signing_key_file:
            source = settings.audit_signing_key_file
            try:
                text = source.read_text()
            except OSError as exc:
                raise InsecureConfiguration(
                    f"CAIRN_AUDIT_SIGNING_KEY_FILE {source} cannot be read: {exc.strerror}"
                ) from exc
            return parse_private_key(text, f"CAIRN_AUDIT_SIGNING_KEY_FILE {source}")
        if settings.environment == "production":
            # Settings refuse this at start-up already; kept for a key removed while running.
            raise InsecureConfiguration(
                "CAIRN_AUDIT_SIGNING_KEY or CAIRN_AUDIT_SIGNING_KEY_FILE must be set when "
                "CAIRN_ENVIRONMENT=production"
            )
        # Development: a key kept in the data directory, like Settings.secret's secrets.
        path = settings.data_dir / DEV_KEY_FILE
        if not path.exists():
            private_dir(settings.data_dir)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            create_private_file(path, pem.decode())
        return parse_private_key(path.read_text(), str(path))

    def verify_key(self) -> Ed25519PublicKey:
        """The key checkpoints must be signed with: configured, else the signing key's."""
        configured = self.settings.audit_verify_public_key
        if configured:
            return parse_public_key(configured, "CAIRN_AUDIT_VERIFY_PUBLIC_KEY")
        return self.signing_key().public_key()

    def read(self) -> list[tuple[int, Checkpoint | None]]:
        """Every line of the file with its 1-based number; None for a line that is not a
        checkpoint. A missing file holds no checkpoints."""
        try:
            handle = self.path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        with handle:
            return [
                (number, Checkpoint.parse(line))
                for number, line in enumerate(handle, start=1)
                if line.strip()
            ]

    def append(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Append checkpoints durably: one O_APPEND write, then fsync."""
        if not checkpoints:
            return
        private_dir(self.path.parent)
        data = "".join(c.to_line() for c in checkpoints).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def sign(self, key: Ed25519PrivateKey, chain: str, seq: int, head_hash: str) -> Checkpoint:
        """A checkpoint of a chain (stored name) at this head, signed now."""
        name = self.names.public(chain)
        time = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        signature = key.sign(signing_payload(name, seq, head_hash, time))
        return Checkpoint(
            chain=name,
            seq=seq,
            head_hash=head_hash,
            time=time,
            key_id=key_id_of(key.public_key()),
            signature=base64.b64encode(signature).decode(),
        )


def signature_problem(checkpoint: Checkpoint, key: Ed25519PublicKey, key_id: str) -> str | None:
    """Why the checkpoint's signature does not hold under the key; None when it does."""
    if checkpoint.key_id != key_id:
        return f"checkpoint signed by another key (key_id {checkpoint.key_id[:16]})"
    signature = _key_bytes(checkpoint.signature)
    if signature is None or len(signature) != 64:
        return "checkpoint signature invalid"
    try:
        key.verify(signature, checkpoint.payload())
    except InvalidSignature:
        return "checkpoint signature invalid"
    return None


@dataclass(frozen=True)
class CheckedCheckpoint:
    """A checkpoint of a stored chain, with what its signature check found."""

    line: int
    checkpoint: Checkpoint
    problem: str | None


@dataclass
class SignedCheckpoints:
    """The checkpoints of the chains in scope, by stored chain name, in file order."""

    by_chain: dict[str, list[CheckedCheckpoint]] = field(default_factory=dict)
    # Lines that are not checkpoints of any chain (only reported when every chain is checked).
    unreadable: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(items) for items in self.by_chain.values()) + len(self.unreadable)


def load_checkpoints(log: CheckpointLog, chains: Collection[str] | None) -> SignedCheckpoints:
    """Read the file and check the signatures of the checkpoints of `chains` (stored names;
    every chain when None). Blocking."""
    found = SignedCheckpoints()
    key: Ed25519PublicKey | None = None
    key_id = ""
    for number, checkpoint in log.read():
        chain = log.names.stored(checkpoint.chain) if checkpoint else None
        if checkpoint is None or chain is None:
            if chains is None:
                found.unreadable.append(number)
            continue
        if chains is not None and chain not in chains:
            continue
        if key is None:  # loaded only when there is something to check
            key = log.verify_key()
            key_id = key_id_of(key)
        problem = signature_problem(checkpoint, key, key_id)
        found.by_chain.setdefault(chain, []).append(CheckedCheckpoint(number, checkpoint, problem))
    return found


def checkpoint_file_problem(log: CheckpointLog, lines: Sequence[int]) -> BadEntry | None:
    """The first unreadable line of the checkpoint file, as a finding."""
    if not lines:
        return None
    return BadEntry(
        CHECKPOINT_FILE_CHAIN, lines[0], None, f"line {lines[0]} of {log.path} is not a checkpoint"
    )


@dataclass
class CheckpointVerifier:
    """Feed one chain's entries in seq order (alongside the ChainVerifier); `finish` reports the
    lowest position where the database disagrees with a signed checkpoint of the chain."""

    chain: str
    checkpoints: Sequence[CheckedCheckpoint]
    first_bad: BadEntry | None = None
    _seen_entries: bool = field(default=False, init=False)
    _expected: dict[int, list[Checkpoint]] = field(default_factory=dict, init=False)
    _problems: list[BadEntry] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        for item in self.checkpoints:
            if item.problem is not None:
                self._report(item.checkpoint.seq, None, item.problem)
            elif item.checkpoint.seq == 0:
                if item.checkpoint.head_hash != GENESIS_HASH:
                    self._report(0, None, "checkpoint mismatch: signed genesis hash differs")
            else:
                self._expected.setdefault(item.checkpoint.seq, []).append(item.checkpoint)

    def _report(self, seq: int, entry_id: int | None, reason: str) -> None:
        self._problems.append(BadEntry(self.chain, seq, entry_id, reason))

    def feed(self, entries: Iterable[AuditEntry]) -> None:
        """Compare the entries with the checkpoints signed at their positions."""
        for entry in entries:
            self._seen_entries = True
            for checkpoint in self._expected.pop(entry.seq, ()):
                if checkpoint.head_hash != entry.entry_hash:
                    self._report(
                        entry.seq,
                        entry.id,
                        "checkpoint mismatch: entry hash differs from signed checkpoint",
                    )

    def finish(self, head: AuditChainHead | None) -> None:
        """Checkpoints whose entry never came, and the head against every checkpoint."""
        if head is None and not self._seen_entries:
            missing = "chain missing: no entries and no head, but a signed checkpoint"
        elif head is None:
            missing = "chain head missing, but a signed checkpoint"
        else:
            missing = "checkpoint mismatch: entry missing at a signed position"
        for seq in self._expected:
            self._report(seq, None, missing)
        for item in self.checkpoints:
            seq = item.checkpoint.seq
            if item.problem is not None or seq in self._expected:
                continue
            if head is None:
                self._report(seq, None, missing)
            elif head.seq < seq:
                self._report(seq, None, "chain head is behind a signed checkpoint (truncated)")
        if self._problems:
            self.first_bad = min(self._problems, key=lambda bad: bad.seq)


async def write_checkpoints(session: AsyncSession, settings: Settings) -> int:
    """Sign and append a checkpoint of every chain whose head moved since its last checkpoint;
    how many were written.

    A chain whose head does not extend its last checkpoint (or does not match its own last
    entry) is not signed: that would bless a rewrite. It is logged, and `audit verify` reports
    it. The periodic job kind "audit_checkpoint" and `cairn audit checkpoint` call this. The
    gauge `cairn_audit_verify_ok{check="checkpoint"}` says whether this run found a problem.
    """
    log = CheckpointLog(settings)
    key = await asyncio.to_thread(_signing_key_checked, log)
    last, rejected = await asyncio.to_thread(_last_valid_per_chain, log, key.public_key())
    heads = await audit_repository.heads(session)
    written: list[Checkpoint] = []
    problems = len(rejected)
    for head in heads:
        previous = last.pop(log.names.public(head.chain), None)
        if previous and (previous.seq, previous.head_hash) == (head.seq, head.last_hash):
            continue
        problem = await _extension_problem(session, head, previous)
        if problem is not None:
            logger.error("audit chain %s not checkpointed: %s", head.chain, problem)
            problems += 1
            continue
        written.append(log.sign(key, head.chain, head.seq, head.last_hash))
    for name in last:
        logger.error("audit chain %s has signed checkpoints but no head in the database", name)
        problems += 1
    await asyncio.to_thread(log.append, written)
    AUDIT_VERIFY_OK.labels("checkpoint").set(0 if problems else 1)
    return len(written)


def _signing_key_checked(log: CheckpointLog) -> Ed25519PrivateKey:
    key = log.signing_key()
    if log.settings.audit_verify_public_key:
        expected = key_id_of(log.verify_key())
        if key_id_of(key.public_key()) != expected:
            raise InsecureConfiguration(
                "the audit signing key does not match CAIRN_AUDIT_VERIFY_PUBLIC_KEY: "
                "checkpoints signed with it would not verify"
            )
    return key


@dataclass
class _Tail:
    """What one process has read of a checkpoint file: up to `offset`, its `lines` lines."""

    identity: tuple[int, int]  # (st_dev, st_ino): a replaced file is read again
    offset: int = 0
    lines: int = 0
    # The last whole line read, which must still end at `offset` (else the file was rewritten).
    boundary: bytes = b""
    last: dict[str, Checkpoint] = field(default_factory=dict)
    # Per chain, the lines newer than its last valid checkpoint whose signature fails.
    bad: dict[str, set[int]] = field(default_factory=dict)


_tails: dict[tuple[str, str], _Tail] = {}
_tails_lock = threading.Lock()


def _last_valid_per_chain(
    log: CheckpointLog, key: Ed25519PublicKey
) -> tuple[dict[str, Checkpoint], set[int]]:
    """Each chain's newest checkpoint whose signature holds (public chain names), and the
    numbers of the lines newer than it whose signature does not.

    The file is only appended to, so a process reads only what was appended since it last
    looked: checkpoints now come every few entries and the file grows for good. A file that
    was replaced or got shorter is read again from its start. Only whole lines are read (a
    writer may be mid-append)."""
    key_id = key_id_of(key)
    with _tails_lock:
        cache = (str(log.path), key_id)
        try:
            handle = log.path.open("rb")
        except FileNotFoundError:
            _tails.pop(cache, None)
            return {}, set()
        with handle:
            status = os.fstat(handle.fileno())
            identity = (status.st_dev, status.st_ino)
            tail = _tails.get(cache)
            if tail is None or tail.identity != identity or status.st_size < tail.offset:
                tail = _Tail(identity)
            handle.seek(tail.offset - len(tail.boundary))
            data = handle.read()
            if not data.startswith(tail.boundary):
                tail = _Tail(identity)
                handle.seek(0)
                data = handle.read()
            else:
                data = data[len(tail.boundary) :]
        whole = data.rfind(b"\n") + 1
        if whole:
            tail.boundary = data[data.rfind(b"\n", 0, whole - 1) + 1 : whole]
        for raw in data[:whole].split(b"\n")[:-1]:
            tail.lines += 1
            checkpoint = Checkpoint.parse(raw.decode("utf-8", errors="replace"))
            if checkpoint is None:
                continue
            if signature_problem(checkpoint, key, key_id) is None:
                tail.last[checkpoint.chain] = checkpoint
                tail.bad.pop(checkpoint.chain, None)
            else:
                tail.bad.setdefault(checkpoint.chain, set()).add(tail.lines)
        tail.offset += whole
        _tails[cache] = tail
        last = dict(tail.last)
        rejected: set[int] = set()
        for lines in tail.bad.values():
            rejected |= lines
    if rejected:
        logger.error("audit checkpoint file %s: lines %s do not verify", log.path, sorted(rejected))
    return last, rejected


async def _extension_problem(
    session: AsyncSession, head: AuditChainHead, previous: Checkpoint | None
) -> str | None:
    if head.seq == 0:
        if head.last_hash != GENESIS_HASH:
            return "an empty chain's head does not carry the genesis hash"
    elif await audit_repository.entry_hash(session, head.chain, head.seq) != head.last_hash:
        return "the head does not match the chain's last entry"
    if previous is None:
        return None
    if head.seq < previous.seq:
        return f"the head went back behind the checkpoint at seq {previous.seq}"
    if previous.seq == 0:
        signed = GENESIS_HASH
    else:
        signed = await audit_repository.entry_hash(session, head.chain, previous.seq) or ""
    if signed != previous.head_hash:
        return f"the entry at seq {previous.seq} differs from its signed checkpoint"
    return None
