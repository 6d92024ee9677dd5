"""Content-addressed file store, one per tenant: originals live at
files/t<tenant>/<sha[:2]>/<sha>, never at a client path.

Addressing is per tenant so that nothing about one tenant's files can be learnt from another's:
two tenants uploading the same bytes hold two blobs, a purge in one never has to ask whether
the other still needs the file (and so can never tell), and each blob can later be encrypted
under its own tenant's key. Stores written before this layout kept one shared blob at
files/<sha[:2]>/<sha>; `relocate_legacy` moves such a blob under each tenant that holds it,
and reads fall back to it until then.

With a tenant data key (app/crypto), a blob is stored as an AES-GCM envelope bound to its
tenant and hash; the hash names the plaintext, so addressing does not change. Plaintext never
touches the disk then: the upload is held in memory (it is bounded by max_upload_bytes) and
sealed before the one write. Blobs written before encryption stay readable as they are.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from app.kit.envelope import DataKey, blob_ad, is_sealed, unseal
from app.kit.files import private_dir

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


class Keys(Protocol):
    """Where tenant data keys come from (app/crypto/keyring.py's Keyring)."""

    async def for_writing(
        self, tenant_id: int, session: AsyncSession | None = None
    ) -> DataKey | None: ...

    async def for_reading(self, tenant_id: int) -> DataKey | None: ...


CHUNK = 1024 * 1024


def _checked_sha(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return sha256


def _tenant_key(tenant_id: int) -> int:
    if type(tenant_id) is not int or tenant_id <= 0:
        raise ValueError("not a tenant key")
    return tenant_id


class TooLarge(Exception):
    """The stream exceeded the size limit."""


class ContentStore:
    def __init__(self, root: Path, keyring: Keys | None = None) -> None:
        self.root = root
        self.keyring = keyring

    async def write_key(
        self, tenant_id: int, session: AsyncSession | None = None
    ) -> DataKey | None:
        """The key a new blob of the tenant is sealed with (None: encryption is off); a new
        key is created in `session` (see Keyring.for_writing)."""
        return await self.keyring.for_writing(tenant_id, session) if self.keyring else None

    async def read_key(self, tenant_id: int) -> DataKey | None:
        """The key the tenant's sealed blobs open with (None: no KEK, or no key yet)."""
        return await self.keyring.for_reading(tenant_id) if self.keyring else None

    def path_for(self, tenant_id: int, sha256: str) -> Path:
        """Where the tenant's blob with this hash lives."""
        return self.root / f"t{_tenant_key(tenant_id)}" / sha256[:2] / _checked_sha(sha256)

    def legacy_path_for(self, sha256: str) -> Path:
        """Where a blob shared by every tenant lived before blobs were kept per tenant."""
        return self.root / sha256[:2] / _checked_sha(sha256)

    def _existing(self, tenant_id: int, sha256: str) -> Path:
        path = self.path_for(tenant_id, sha256)
        if path.exists():
            return path
        legacy = self.legacy_path_for(sha256)
        return legacy if legacy.exists() else path

    def put_stream(
        self, stream: BinaryIO, *, tenant_id: int, max_bytes: int, key: DataKey | None = None
    ) -> tuple[str, int]:
        """Copy a stream in, hashing as it goes; returns (sha256, size). Raises TooLarge. With
        a data key, the blob is sealed before it is written."""
        private_dir(self.root)
        if key is not None:
            return self._put_sealed(stream, tenant_id=tenant_id, max_bytes=max_bytes, key=key)
        digest = hashlib.sha256()
        size = 0
        # mkstemp creates the file 0600, and the rename keeps that mode.
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(CHUNK):
                    size += len(block)
                    if size > max_bytes:
                        raise TooLarge()
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            target = self.path_for(tenant_id, sha)
            private_dir(target.parent)
            # Same content, same name: replacing an existing blob is harmless.
            os.replace(tmp_name, target)
            return sha, size
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _put_sealed(
        self, stream: BinaryIO, *, tenant_id: int, max_bytes: int, key: DataKey
    ) -> tuple[str, int]:
        digest = hashlib.sha256()
        parts: list[bytes] = []
        size = 0
        while block := stream.read(CHUNK):
            size += len(block)
            if size > max_bytes:
                raise TooLarge()
            digest.update(block)
            parts.append(block)
        sha = digest.hexdigest()
        self._write(tenant_id, sha, key.seal(b"".join(parts), blob_ad(tenant_id, sha)))
        return sha, size

    def _write(self, tenant_id: int, sha256: str, data: bytes) -> None:
        target = self.path_for(tenant_id, sha256)
        private_dir(target.parent)
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def read(self, tenant_id: int, sha256: str, key: DataKey | None = None) -> bytes:
        """The tenant's blob's bytes (decrypted with `key` when it is sealed; EncryptionError
        when it is sealed and no key, or another tenant's, is given)."""
        data = self._existing(tenant_id, sha256).read_bytes()
        return unseal(data, key, blob_ad(tenant_id, sha256))

    def is_sealed(self, tenant_id: int, sha256: str) -> bool:
        """Whether the tenant's blob is stored encrypted."""
        path = self._existing(tenant_id, sha256)
        with path.open("rb") as fh:
            return is_sealed(fh.read(16))

    def seal_existing(self, tenant_id: int, sha256: str, key: DataKey) -> bool:
        """Encrypt a blob stored in plaintext or under a retired key generation under `key`'s
        current one, in place and atomically; False when it already was (so a conversion can
        be run again). A legacy shared blob is left for relocation."""
        path = self.path_for(tenant_id, sha256)
        data = path.read_bytes()
        if key.is_current(data):
            return False
        ad = blob_ad(tenant_id, sha256)
        self._write(tenant_id, sha256, key.seal(unseal(data, key, ad), ad))
        return True

    def delete(self, tenant_id: int, sha256: str) -> None:
        """Remove the tenant's blob (hard deletion)."""
        self.path_for(tenant_id, sha256).unlink(missing_ok=True)

    def exists(self, tenant_id: int, sha256: str) -> bool:
        """Whether the tenant's blob is stored (in its own store, or still in the legacy one)."""
        return self._existing(tenant_id, sha256).exists()

    def delete_legacy(self, sha256: str) -> None:
        """Remove a blob of the legacy, shared layout."""
        self.legacy_path_for(sha256).unlink(missing_ok=True)

    def legacy_blobs(self) -> list[str]:
        """The hashes still stored in the legacy, shared layout."""
        if not self.root.exists():
            return []
        return sorted(
            path.name
            for folder in self.root.glob("[0-9a-f][0-9a-f]")
            for path in folder.iterdir()
            if path.is_file() and len(path.name) == 64
        )

    def relocate_legacy(self, sha256: str, tenant_ids: list[int]) -> None:
        """Give each tenant its own copy of a legacy blob, then remove the shared one. Safe to
        run again after a crash: copies land under a temp name and are renamed into place."""
        legacy = self.legacy_path_for(sha256)
        if not legacy.exists():
            return
        for tenant_id in tenant_ids:
            target = self.path_for(tenant_id, sha256)
            if target.exists():
                continue
            private_dir(target.parent)
            fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as out, legacy.open("rb") as source:
                    while block := source.read(CHUNK):
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        legacy.unlink(missing_ok=True)

    def remove_stale_uploads(self, older_than_seconds: float) -> int:
        """Delete upload temp files older than this (their upload died mid-transfer); how many.

        A live upload writes its temp file continuously, so an old one is abandoned."""
        if not self.root.exists():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.root.glob(".upload-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
