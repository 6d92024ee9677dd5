"""Opaque public ids: what the API shows instead of the database's integer keys.

Integer keys come from counters shared by every tenant, so a member of tenant B who saw two of
its own ids could count tenant A's uploads, chats or searches from the gap between them. The
API therefore never shows one. A public id is the AES encryption of one 16-byte block —
(kind, seven zero bytes, the 64-bit key) — under a key derived from the deployment's audit
secret, written in hex behind a short prefix naming its kind (``doc_…``, ``ses_…``):

- AES on a single block is a keyed pseudorandom permutation: ids are distinct, stable, and
  without the key reveal nothing of the key's order or gaps.
- Decrypting recovers the kind and the integer; the seven zero bytes act as a 56-bit check,
  so an id made up or altered by a client, or one of another kind, does not decode.
- Nothing is stored: every existing row has its public id already, lookups stay by primary
  key, and the search hot path does not read another column.

The audit secret is the key's root because it can never be rotated anyway (audit entries
commit to it); rotating it would change every public id, not lose anything.
"""

from __future__ import annotations

import re
import threading
from enum import Enum
from typing import Annotated

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_ENCODED_CHARS = 32  # 16 bytes in hex
_MAX_KEY = (1 << 63) - 1
_CHECK = bytes(7)


class IdKind(Enum):
    """Each kind's block tag and prefix. Tags are part of every issued id: never renumber."""

    TENANT = (1, "ten")
    USER = (2, "usr")
    DOCUMENT = (3, "doc")
    CHUNK = (4, "chk")
    CHAT_SESSION = (5, "ses")
    API_KEY = (6, "key")
    AUDIT_ENTRY = (7, "aud")
    RECEIPT = (8, "rcp")
    JOB = (9, "job")
    CHAT_MESSAGE = (10, "msg")

    @property
    def tag(self) -> int:
        return self.value[0]

    @property
    def prefix(self) -> str:
        return self.value[1]

    @property
    def pattern(self) -> str:
        return rf"^{self.prefix}_[0-9a-f]{{{_ENCODED_CHARS}}}$"


class PublicIds:
    """Encodes and decodes the public ids of one deployment."""

    def __init__(self, secret: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"cairn public ids v1"
        ).derive(secret.encode())
        # ECB over exactly one block is the block cipher used as a permutation; there is no
        # second block whose repetition ECB could reveal.
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())
        # ECB contexts keep no state between blocks, so one per thread is reused for every id
        # (a new context per id cost more than the encryption).
        self._local = threading.local()

    def _contexts(self) -> tuple[CipherContext, CipherContext]:
        contexts: tuple[CipherContext, CipherContext] | None = getattr(
            self._local, "contexts", None
        )
        if contexts is None:
            contexts = (self._cipher.encryptor(), self._cipher.decryptor())
            self._local.contexts = contexts
        return contexts

    def encode(self, kind: IdKind, key: int) -> str:
        """The public id of the row with this primary key."""
        if not 0 <= key <= _MAX_KEY:
            raise ValueError(f"{key} is not a database key")
        block = bytes([kind.tag]) + _CHECK + key.to_bytes(8, "big")
        return f"{kind.prefix}_{self._contexts()[0].update(block).hex()}"

    def decode(self, kind: IdKind, public: str) -> int | None:
        """The primary key behind a public id of this kind; None for anything else."""
        prefix = kind.prefix + "_"
        if len(public) != len(prefix) + _ENCODED_CHARS or not public.startswith(prefix):
            return None
        try:
            sealed = bytes.fromhex(public[len(prefix) :])
        except ValueError:
            return None
        block = self._contexts()[1].update(sealed)
        if block[0] != kind.tag or block[1:8] != _CHECK:
            return None
        return int.from_bytes(block[8:], "big")


_current: PublicIds | None = None


def configure_public_ids(secret: str) -> None:
    """Set the deployment's id key (the app factory and the CLI do this from settings)."""
    global _current
    _current = PublicIds(secret)


def public_ids() -> PublicIds:
    """The configured codec."""
    if _current is None:
        raise RuntimeError("public ids are not configured; call configure_public_ids first")
    return _current


def encode_id(kind: IdKind, key: int) -> str:
    """The public id of a row of this kind."""
    return public_ids().encode(kind, key)


def _shown(kind: IdKind) -> PlainSerializer:
    """Serialises an integer key as the kind's public id."""
    return PlainSerializer(lambda key: encode_id(kind, key), return_type=str, when_used="always")


def _parsed(kind: IdKind) -> BeforeValidator:
    """Accepts the kind's public id (and nothing else: not the integer key) and hands the
    code the integer key; anything else is a validation error (422)."""

    def parse(value: object) -> int:
        if isinstance(value, str) and re.fullmatch(kind.pattern, value):
            key = public_ids().decode(kind, value)
            if key is not None:
                return key
        raise ValueError(f"not a valid {kind.prefix}_… id")

    return BeforeValidator(parse)


def _schema(kind: IdKind) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": kind.pattern})


# Response fields: integer keys in the code, public ids on the wire.
TenantId = Annotated[int, _shown(IdKind.TENANT), _schema(IdKind.TENANT)]
UserId = Annotated[int, _shown(IdKind.USER), _schema(IdKind.USER)]
DocumentId = Annotated[int, _shown(IdKind.DOCUMENT), _schema(IdKind.DOCUMENT)]
ChunkId = Annotated[int, _shown(IdKind.CHUNK), _schema(IdKind.CHUNK)]
ChatSessionId = Annotated[int, _shown(IdKind.CHAT_SESSION), _schema(IdKind.CHAT_SESSION)]
APIKeyId = Annotated[int, _shown(IdKind.API_KEY), _schema(IdKind.API_KEY)]
AuditEntryId = Annotated[int, _shown(IdKind.AUDIT_ENTRY), _schema(IdKind.AUDIT_ENTRY)]
ReceiptId = Annotated[int, _shown(IdKind.RECEIPT), _schema(IdKind.RECEIPT)]
JobId = Annotated[int, _shown(IdKind.JOB), _schema(IdKind.JOB)]
ChatMessageId = Annotated[int, _shown(IdKind.CHAT_MESSAGE), _schema(IdKind.CHAT_MESSAGE)]

# Request fields and path parameters: public ids on the wire, integer keys in the code.
DocumentRef = Annotated[int, _parsed(IdKind.DOCUMENT), _schema(IdKind.DOCUMENT)]
ChatSessionRef = Annotated[int, _parsed(IdKind.CHAT_SESSION), _schema(IdKind.CHAT_SESSION)]
ChatMessageRef = Annotated[int, _parsed(IdKind.CHAT_MESSAGE), _schema(IdKind.CHAT_MESSAGE)]
APIKeyRef = Annotated[int, _parsed(IdKind.API_KEY), _schema(IdKind.API_KEY)]
ReceiptRef = Annotated[int, _parsed(IdKind.RECEIPT), _schema(IdKind.RECEIPT)]
ChunkRef = Annotated[int, _parsed(IdKind.CHUNK), _schema(IdKind.CHUNK)]
JobRef = Annotated[int, _parsed(IdKind.JOB), _schema(IdKind.JOB)]
