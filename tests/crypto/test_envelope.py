"""Envelopes, the KEK file and the production refusals (no database)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.cache.store import MemoryStore
from app.crypto.cache import SealedStore
from app.kit.envelope import DataKey, EncryptionError, blob_ad, chunk_ad, is_sealed
from app.kit.kek import KekError, load_kek
from app.kit.settings import InsecureConfiguration, Settings
from tests.crypto.helpers import CANARY, write_kek

PRODUCTION = {
    "environment": "production",
    "jwt_secret": "j" * 40,
    "audit_secret": "a" * 40,
    "audit_signing_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
}


def _key(tenant_id: int) -> DataKey:
    return DataKey.from_bytes(tenant_id, os.urandom(32))


def test_a_sealed_object_opens_only_as_itself() -> None:
    key = _key(1)
    sealed = key.seal(CANARY.encode(), blob_ad(1, "a" * 64))
    assert is_sealed(sealed)
    assert CANARY.encode() not in sealed
    assert key.open(sealed, blob_ad(1, "a" * 64)) == CANARY.encode()
    # Fresh nonce per object: the same plaintext never gives the same ciphertext.
    assert key.seal(CANARY.encode(), blob_ad(1, "a" * 64)) != sealed
    with pytest.raises(EncryptionError, match="cannot be decrypted with tenant 1's key"):
        key.open(sealed, blob_ad(1, "b" * 64))
    with pytest.raises(EncryptionError, match="cannot be decrypted with tenant 2's key"):
        _key(2).open(sealed, blob_ad(1, "a" * 64))


def test_sealed_chunk_text_is_bound_to_its_row() -> None:
    key = _key(3)
    stored = key.seal_text(CANARY, chunk_ad(3, 10, 0, "text"))
    assert stored.startswith("cairn:enc:v1:")
    assert key.open_text(stored, chunk_ad(3, 10, 0, "text")) == CANARY
    for moved in (
        chunk_ad(3, 10, 1, "text"),
        chunk_ad(3, 11, 0, "text"),
        chunk_ad(4, 10, 0, "text"),
    ):
        with pytest.raises(EncryptionError, match="another tenant or object"):
            key.open_text(stored, moved)


def test_kek_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = write_kek(tmp_path / "kek", 0o644)
    with pytest.raises(
        KekError, match=r"readable by group or others \(mode 0644\); run: chmod 600"
    ):
        load_kek(path)
    path.chmod(0o640)
    with pytest.raises(KekError, match="readable by group or others"):
        load_kek(path)
    path.chmod(0o600)
    assert len(load_kek(path).fingerprint) == 32


def test_kek_file_must_hold_32_bytes_of_base64(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_text("not base64!")
    path.chmod(0o600)
    with pytest.raises(KekError, match="not base64"):
        load_kek(path)
    path.write_text("AAAA")
    with pytest.raises(KekError, match="holds 3 bytes, not 32"):
        load_kek(path)


def test_a_wrapped_key_unwraps_only_with_its_kek_and_tenant(tmp_path: Path) -> None:
    kek = load_kek(write_kek(tmp_path / "a"))
    other = load_kek(write_kek(tmp_path / "b"))
    raw = os.urandom(32)
    wrapped = kek.wrap(5, raw)
    assert kek.unwrap(5, wrapped, kek.fingerprint) == raw
    with pytest.raises(KekError, match="wrapped under another KEK"):
        other.unwrap(5, wrapped, kek.fingerprint)
    with pytest.raises(KekError, match="does not unwrap with this KEK"):
        other.unwrap(5, wrapped, other.fingerprint)
    with pytest.raises(KekError, match="wrapped for another tenant"):
        kek.unwrap(6, wrapped, kek.fingerprint)
    assert "key=" not in repr(kek)


def test_production_refuses_encryption_without_a_kek(tmp_path: Path) -> None:
    with pytest.raises(InsecureConfiguration, match="CAIRN_ENCRYPTION__KEK_FILE must name"):
        Settings(**PRODUCTION, data_dir=tmp_path, encryption={"enabled": True})
    with pytest.raises(InsecureConfiguration, match="does not exist"):
        Settings(
            **PRODUCTION,
            data_dir=tmp_path,
            encryption={"enabled": True, "kek_file": tmp_path / "missing"},
        )


def test_production_refuses_a_kek_file_open_to_others(tmp_path: Path) -> None:
    kek = write_kek(tmp_path / "kek", 0o644)
    with pytest.raises(InsecureConfiguration, match="readable by group or others"):
        Settings(**PRODUCTION, data_dir=tmp_path, encryption={"enabled": True, "kek_file": kek})
    kek.chmod(0o600)
    settings = Settings(
        **PRODUCTION, data_dir=tmp_path, encryption={"enabled": True, "kek_file": kek}
    )
    assert settings.encryption.enabled


class _Keys:
    """A keyring stand-in: one key per tenant."""

    enabled = True

    def __init__(self) -> None:
        self.keys = {1: _key(1), 2: _key(2)}

    async def for_writing(self, tenant_id: int) -> DataKey:
        return self.keys[tenant_id]

    async def for_reading(self, tenant_id: int) -> DataKey | None:
        return self.keys.get(tenant_id)


async def test_cache_entries_are_sealed_per_tenant_and_entry() -> None:
    inner = MemoryStore(100)
    keys = _Keys()
    store = SealedStore(inner, keys)  # type: ignore[arg-type]
    await store.set("answer:1:abc", CANARY.encode(), ttl=60)
    raw = await inner.get("answer:1:abc")
    assert raw is not None
    assert CANARY.encode() not in raw
    assert await store.get("answer:1:abc") == CANARY.encode()
    # Copied under another entry's key, or another tenant's: a miss, and removed.
    await inner.set("answer:1:other", raw, ttl=60)
    await inner.set("answer:2:abc", raw, ttl=60)
    assert await store.get("answer:1:other") is None
    assert await store.get("answer:2:abc") is None
    assert await inner.get("answer:2:abc") is None
    # delete_where's condition sees the plaintext.
    assert await store.delete_where("answer:1:", lambda v: v == CANARY.encode()) == 1
    # The tenant's key is gone (shredded): its entries are misses.
    await store.set("answer:1:abc", b"x", ttl=60)
    del keys.keys[1]
    assert await store.get("answer:1:abc") is None
    with pytest.raises(EncryptionError, match="names no tenant"):
        await store.set("global", b"x", ttl=60)
    # A tenant without a key yet: nothing is cached (no key is created from a cache write).
    await store.set("answer:1:abc", b"x", ttl=60)
    assert await inner.get("answer:1:abc") is None
