"""The key-encryption key: 32 random bytes, base64, in a file only the server's user may read.

It never enters the database or a backup; it wraps (AES-GCM) each tenant's data key, with the
tenant's id as associated data so a wrapped key copied onto another tenant's row does not
unwrap. Its fingerprint is stored beside each wrapped key, so a wrong KEK is reported as such
rather than as a failed decryption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.kit.envelope import KEY_BYTES, MAGIC, NONCE_BYTES, EncryptionError

_WRAP_HEADER = MAGIC + b"K\x01"
GENERATE_HINT = "head -c 32 /dev/urandom | base64 > kek && chmod 600 kek"


class KekError(EncryptionError):
    """The KEK file is missing, unreadable, too open or malformed."""


def _wrap_ad(tenant_id: int, generation: int) -> bytes:
    # The generation is bound too: a wrapped key moved to another generation's column does
    # not unwrap as that generation (its objects would fail later, less clearly).
    base = f"cairn/v1/tenant-key/{tenant_id}"
    return (base if generation == 1 else f"{base}/g{generation}").encode()


@dataclass(frozen=True)
class Kek:
    key: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """A public name of this KEK (a hash, so it reveals nothing of the key)."""
        return hashlib.sha256(b"cairn/v1/kek-fingerprint\0" + self.key).hexdigest()[:32]

    def wrap(self, tenant_id: int, data_key: bytes, generation: int = 1) -> bytes:
        """`data_key` encrypted under this KEK for `tenant_id`'s key `generation`."""
        nonce = os.urandom(NONCE_BYTES)
        ad = _wrap_ad(tenant_id, generation)
        return _WRAP_HEADER + nonce + AESGCM(self.key).encrypt(nonce, data_key, ad)

    def unwrap(
        self, tenant_id: int, wrapped: bytes, fingerprint: str, generation: int = 1
    ) -> bytes:
        """The data key of `tenant_id` (`generation`); KekError for a key wrapped under
        another KEK."""
        if fingerprint != self.fingerprint:
            raise KekError(
                f"tenant {tenant_id}'s data key is wrapped under another KEK (fingerprint "
                f"{fingerprint}, this KEK is {self.fingerprint}): is encryption.kek_file the "
                "KEK in force (after `cairn encryption rotate-kek`, the new one)?"
            )
        if wrapped[: len(_WRAP_HEADER)] != _WRAP_HEADER:
            raise KekError(f"tenant {tenant_id}: the stored data key is not a wrapped key")
        start = len(_WRAP_HEADER)
        try:
            key = AESGCM(self.key).decrypt(
                wrapped[start : start + NONCE_BYTES],
                wrapped[start + NONCE_BYTES :],
                _wrap_ad(tenant_id, generation),
            )
        except InvalidTag:
            raise KekError(
                f"tenant {tenant_id}'s data key does not unwrap with this KEK "
                "(it was wrapped for another tenant, or altered)"
            ) from None
        if len(key) != KEY_BYTES:
            raise KekError(f"tenant {tenant_id}: the unwrapped data key has the wrong size")
        return key


def check_kek_file(path: Path) -> None:
    """Refuse a KEK file that is missing, not a regular file, or open to group or others."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KekError(f"KEK file {path} does not exist; create one: {GENERATE_HINT}") from None
    except OSError as exc:
        raise KekError(f"KEK file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KekError(f"KEK file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise KekError(
            f"KEK file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )


def load_kek(path: Path) -> Kek:
    """The KEK in `path` (checked: mode 0600 or stricter, 32 bytes of base64)."""
    check_kek_file(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KekError(f"KEK file {path} cannot be read: {exc}") from None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KekError(f"KEK file {path} is not base64; create one: {GENERATE_HINT}") from None
    if len(key) != KEY_BYTES:
        raise KekError(
            f"KEK file {path} holds {len(key)} bytes, not {KEY_BYTES}; create one: {GENERATE_HINT}"
        )
    return Kek(key)
