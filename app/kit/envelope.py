"""AES-256-GCM envelopes: one object (a stored original, a shard file, a chunk's text) sealed
under a tenant's data key.

Layout of a sealed object: ``MAGIC`` (8 bytes) + format version (1 byte) + a fresh 96-bit
nonce + ciphertext and tag under the tenant's first key. After a tenant-key rotation the key
generation follows the format byte (format 2: 4 bytes, big-endian), so that during the
background re-encryption a reader knows which of the tenant's two keys opens an object.

The magic lets every reader tell ciphertext from the plaintext written before encryption was
turned on, so `cairn encryption enable` can convert data piece by piece and be run again
after an interruption. The associated data names the tenant and the
object (``cairn/v1/blob/<tenant>/<sha>``...), so a ciphertext copied into another tenant's file
or another row fails authentication instead of being decrypted as that object.

Text columns hold a prefix (``text_prefix``: ``cairn:enc:v1:``, or ``cairn:enc:v2:g<N>:``
after rotations) + base64 of the same envelope: the column stays a Text on SQLite and
PostgreSQL, legacy rows (no prefix) stay readable during the conversion, and SQL can find the
rows not yet under a tenant's current key by their prefix.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"CAIRNENC"
FORMAT_VERSION = 1  # a tenant's first key (generation 1)
GENERATION_FORMAT = 2  # a later key generation, named in the header
NONCE_BYTES = 12
KEY_BYTES = 32
SEALED_TEXT = "cairn:enc:"
TEXT_PREFIX = SEALED_TEXT + "v1:"  # generation 1
_HEADER = MAGIC + bytes([FORMAT_VERSION])
_GENERATION_BYTES = 4
_MAX_GENERATION = 2**32 - 1


def _header(generation: int) -> bytes:
    if generation == 1:
        return _HEADER
    return MAGIC + bytes([GENERATION_FORMAT]) + generation.to_bytes(_GENERATION_BYTES, "big")


def text_prefix(generation: int) -> str:
    """How a text column's value sealed under key generation `generation` begins."""
    return TEXT_PREFIX if generation == 1 else f"{SEALED_TEXT}v2:g{generation}:"


class EncryptionError(Exception):
    """Data cannot be encrypted or decrypted: a wrong key, a moved ciphertext, no key at all.
    Not a RuntimeError: readers that turn faiss's RuntimeErrors into "stale shard, retry" must
    let this one through."""


def is_sealed(data: bytes) -> bool:
    """Whether `data` is an envelope (any format version) rather than legacy plaintext."""
    return data[: len(MAGIC)] == MAGIC


def is_sealed_text(value: str) -> bool:
    """Whether a text column's value is an envelope rather than legacy plaintext."""
    return value.startswith(SEALED_TEXT)


def sealed_generation(data: bytes) -> int | None:
    """The key generation an envelope was sealed under (None: plaintext; 0: unreadable)."""
    if not is_sealed(data):
        return None
    start = len(MAGIC)
    version = data[start] if len(data) > start else -1
    if version == FORMAT_VERSION:
        return 1
    if version == GENERATION_FORMAT and len(data) >= start + 1 + _GENERATION_BYTES:
        return int.from_bytes(data[start + 1 : start + 1 + _GENERATION_BYTES], "big")
    return 0


def blob_ad(tenant_id: int, sha256: str) -> bytes:
    """Associated data of a stored original."""
    return f"cairn/v1/blob/{tenant_id}/{sha256}".encode()


def shard_ad(tenant_id: int, kind: str, shard_no: int, version: int) -> bytes:
    """Associated data of one version of one shard file."""
    return f"cairn/v1/shard/{tenant_id}/{kind}/{shard_no}/{version}".encode()


def chunk_ad(tenant_id: int, document_id: int, position: int, field: str) -> bytes:
    """Associated data of one field (text, heading_path) of one chunk row. The row's id is not
    known before the insert; (document, position) names the chunk as uniquely."""
    return f"cairn/v1/chunk/{tenant_id}/{document_id}/{position}/{field}".encode()


def _describe(ad: bytes) -> str:
    return ad.decode("ascii", errors="replace")


@dataclass(frozen=True)
class DataKey:
    """A tenant's unwrapped data key: the generation new data is sealed under, and while a
    rotation re-encrypts the tenant, the retired one that still opens older objects. AESGCM
    holds no per-call state, so one instance may be shared by threads."""

    tenant_id: int
    aead: AESGCM
    generation: int = 1
    retired: tuple[tuple[int, AESGCM], ...] = ()

    @classmethod
    def from_bytes(
        cls,
        tenant_id: int,
        key: bytes,
        generation: int = 1,
        retired: Mapping[int, bytes] | None = None,
    ) -> DataKey:
        if not 1 <= generation <= _MAX_GENERATION:
            raise EncryptionError(f"tenant {tenant_id}: key generation {generation} is invalid")
        for raw in (key, *(retired or {}).values()):
            if len(raw) != KEY_BYTES:
                raise EncryptionError(f"tenant {tenant_id}: a data key must be {KEY_BYTES} bytes")
        old = tuple((g, AESGCM(raw)) for g, raw in sorted((retired or {}).items()))
        return cls(tenant_id, AESGCM(key), generation, old)

    def is_current(self, data: bytes) -> bool:
        """Whether `data` is sealed under this key's current generation."""
        return sealed_generation(data) == self.generation

    def seal(self, data: bytes, ad: bytes) -> bytes:
        """`data` as an envelope bound to `ad` (a fresh random nonce every call)."""
        nonce = os.urandom(NONCE_BYTES)
        return _header(self.generation) + nonce + self.aead.encrypt(nonce, data, ad)

    def _aead_for(self, generation: int, ad: bytes) -> AESGCM:
        if generation == self.generation:
            return self.aead
        for old, aead in self.retired:
            if old == generation:
                return aead
        raise EncryptionError(
            f"{_describe(ad)}: sealed under tenant {self.tenant_id}'s key generation "
            f"{generation}, but the tenant's key is at generation {self.generation} (a key "
            "rotated and destroyed since, or data from another installation)"
        )

    def open(self, sealed: bytes, ad: bytes) -> bytes:
        """The plaintext of an envelope sealed for `ad`; EncryptionError when it was not."""
        if not is_sealed(sealed):
            raise EncryptionError(f"{_describe(ad)}: not an encrypted object")
        generation = sealed_generation(sealed)
        if not generation:
            version = sealed[len(MAGIC)] if len(sealed) > len(MAGIC) else -1
            raise EncryptionError(f"{_describe(ad)}: unknown encryption format {version}")
        aead = self._aead_for(generation, ad)
        start = len(_header(generation))
        nonce, body = sealed[start : start + NONCE_BYTES], sealed[start + NONCE_BYTES :]
        try:
            return aead.decrypt(nonce, body, ad)
        except InvalidTag:
            raise EncryptionError(
                f"{_describe(ad)}: cannot be decrypted with tenant {self.tenant_id}'s key "
                "(it belongs to another tenant or object, or was altered)"
            ) from None

    def seal_text(self, text: str, ad: bytes) -> str:
        """A text column's value, sealed."""
        sealed = self.seal(text.encode("utf-8"), ad)
        return text_prefix(self.generation) + base64.b64encode(sealed).decode()

    def open_text(self, value: str, ad: bytes) -> str:
        """A sealed text column's plaintext (the envelope inside names its key generation)."""
        try:
            raw = base64.b64decode(value.rsplit(":", 1)[1], validate=True)
        except (binascii.Error, ValueError, IndexError):
            raise EncryptionError(f"{_describe(ad)}: malformed encrypted text") from None
        return self.open(raw, ad).decode("utf-8")


def unseal(data: bytes, key: DataKey | None, ad: bytes) -> bytes:
    """Plaintext of `data`: legacy plaintext as it is, an envelope opened with `key`."""
    if not is_sealed(data):
        return data
    if key is None:
        raise EncryptionError(
            f"{_describe(ad)} is encrypted, but no key is available "
            "(set encryption.kek_file to the KEK it was written under)"
        )
    return key.open(data, ad)


def unseal_text(value: str, key: DataKey | None, ad: bytes) -> str:
    """Plaintext of a text column's value (legacy plaintext, or sealed with `key`)."""
    if not is_sealed_text(value):
        return value
    if key is None:
        raise EncryptionError(
            f"{_describe(ad)} is encrypted, but no key is available "
            "(set encryption.kek_file to the KEK it was written under)"
        )
    return key.open_text(value, ad)


@dataclass(frozen=True)
class ObjectSealer:
    """A data key bound to one object's associated data: what file writers and readers take,
    so index code needs to know nothing about tenants or key management."""

    key: DataKey
    ad: bytes

    def seal(self, data: bytes) -> bytes:
        return self.key.seal(data, self.ad)

    def open(self, data: bytes) -> bytes:
        return self.key.open(data, self.ad)


def shard_sealer(
    key: DataKey | None, tenant_id: int, kind: str, shard_no: int, version: int
) -> ObjectSealer | None:
    """The sealer of one version of one shard file (None without a key: plaintext)."""
    if key is None:
        return None
    return ObjectSealer(key, shard_ad(tenant_id, kind, shard_no, version))
