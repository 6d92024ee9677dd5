"""AES-256-GCM envelopes: one object (a stored original, a shard file, a chunk's text) sealed
under a tenant's data key.

Layout of a sealed object: ``MAGIC`` (8 bytes) + format version (1 byte) + a fresh 96-bit
nonce + ciphertext and tag. The magic lets every reader tell ciphertext from the plaintext
written before encryption was turned on, so `cairn encryption enable` can convert data piece
by piece and be run again after an interruption. The associated data names the tenant and the
object (``cairn/v1/blob/<tenant>/<sha>``...), so a ciphertext copied into another tenant's file
or another row fails authentication instead of being decrypted as that object.

Text columns hold ``TEXT_PREFIX`` + base64 of the same envelope: the column stays a Text on
SQLite and PostgreSQL, and legacy rows (no prefix) stay readable during the conversion.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"CAIRNENC"
FORMAT_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
TEXT_PREFIX = "cairn:enc:v1:"
_HEADER = MAGIC + bytes([FORMAT_VERSION])


class EncryptionError(Exception):
    """Data cannot be encrypted or decrypted: a wrong key, a moved ciphertext, no key at all.
    Not a RuntimeError: readers that turn faiss's RuntimeErrors into "stale shard, retry" must
    let this one through."""


def is_sealed(data: bytes) -> bool:
    """Whether `data` is an envelope (any format version) rather than legacy plaintext."""
    return data[: len(MAGIC)] == MAGIC


def is_sealed_text(value: str) -> bool:
    """Whether a text column's value is an envelope rather than legacy plaintext."""
    return value.startswith(TEXT_PREFIX)


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
    """A tenant's unwrapped data key. AESGCM holds no per-call state, so one instance may be
    shared by threads."""

    tenant_id: int
    aead: AESGCM

    @classmethod
    def from_bytes(cls, tenant_id: int, key: bytes) -> DataKey:
        if len(key) != KEY_BYTES:
            raise EncryptionError(f"tenant {tenant_id}: a data key must be {KEY_BYTES} bytes")
        return cls(tenant_id, AESGCM(key))

    def seal(self, data: bytes, ad: bytes) -> bytes:
        """`data` as an envelope bound to `ad` (a fresh random nonce every call)."""
        nonce = os.urandom(NONCE_BYTES)
        return _HEADER + nonce + self.aead.encrypt(nonce, data, ad)

    def open(self, sealed: bytes, ad: bytes) -> bytes:
        """The plaintext of an envelope sealed for `ad`; EncryptionError when it was not."""
        if not is_sealed(sealed):
            raise EncryptionError(f"{_describe(ad)}: not an encrypted object")
        version = sealed[len(MAGIC)] if len(sealed) > len(MAGIC) else -1
        if version != FORMAT_VERSION:
            raise EncryptionError(f"{_describe(ad)}: unknown encryption format {version}")
        start = len(_HEADER)
        nonce, body = sealed[start : start + NONCE_BYTES], sealed[start + NONCE_BYTES :]
        try:
            return self.aead.decrypt(nonce, body, ad)
        except InvalidTag:
            raise EncryptionError(
                f"{_describe(ad)}: cannot be decrypted with tenant {self.tenant_id}'s key "
                "(it belongs to another tenant or object, or was altered)"
            ) from None

    def seal_text(self, text: str, ad: bytes) -> str:
        """A text column's value, sealed."""
        return TEXT_PREFIX + base64.b64encode(self.seal(text.encode("utf-8"), ad)).decode()

    def open_text(self, value: str, ad: bytes) -> str:
        """A sealed text column's plaintext."""
        try:
            raw = base64.b64decode(value[len(TEXT_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
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
