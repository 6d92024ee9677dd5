"""Cache entries sealed under their tenant's data key.

The answer cache holds answers, citations and prompt passages, the query-embedding cache holds
vectors of what members asked: both are document- or tenant-derived, and with Redis they sit
outside the data dir on another host (and in its RDB/AOF files). A TTL bounds how long an
entry lives but not who can read it meanwhile, so with encryption on every value is sealed
under the tenant's key, bound to its cache key. Keys are `<kind>:<tenant id>:<digest>` (no
plaintext in them). An entry that no longer opens (its tenant was shredded) is a miss and is
deleted.
"""

from __future__ import annotations

from collections.abc import Callable

from app.cache.store import CacheStore
from app.crypto.keyring import Keyring
from app.kit.envelope import DataKey, EncryptionError


def _tenant_of(key: str) -> int | None:
    parts = key.split(":", 2)
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def _ad(tenant_id: int) -> bytes:
    return f"cairn/v1/cache/{tenant_id}".encode()


def _open(data_key: DataKey, raw: bytes, key: str | None) -> bytes:
    """The value of a sealed entry. The sealed payload starts with the entry's own cache key
    (delete_where's conditions see values only), so a value copied under another key is
    refused like one of another tenant."""
    stored_key, _, value = data_key.open(raw, _ad(data_key.tenant_id)).partition(b"\n")
    if key is not None and stored_key != key.encode():
        raise EncryptionError(f"cache entry {key!r} holds another entry's value")
    return value


class SealedStore:
    """A CacheStore whose values are sealed per tenant (keys without a tenant: refused; a
    tenant without a data key yet: not cached)."""

    def __init__(self, inner: CacheStore, keyring: Keyring) -> None:
        self.inner = inner
        self.keyring = keyring
        self.backend = inner.backend

    async def _key_for(self, key: str) -> DataKey | None:
        # Never creates a key: a cache write may run inside a request whose transaction holds
        # SQLite's only writer connection. A tenant without a key has nothing sealed to cache.
        tenant_id = _tenant_of(key)
        if tenant_id is None:
            raise EncryptionError(f"cache key {key!r} names no tenant; refusing to store it")
        return await self.keyring.for_reading(tenant_id)

    async def get(self, key: str) -> bytes | None:
        raw = await self.inner.get(key)
        if raw is None:
            return None
        try:
            data_key = await self._key_for(key)
            if data_key is None:
                raise EncryptionError("the tenant has no data key")
            return _open(data_key, raw, key)
        except EncryptionError:
            await self.inner.delete(key)
            return None

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        data_key = await self._key_for(key)
        if data_key is None:
            return  # not cached (see _key_for)
        sealed = data_key.seal(key.encode() + b"\n" + value, _ad(data_key.tenant_id))
        await self.inner.set(key, sealed, ttl=ttl)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_where(self, prefix: str, condition: Callable[[bytes], bool]) -> int:
        tenant_id = _tenant_of(prefix + "x")
        data_key = await self.keyring.for_reading(tenant_id) if tenant_id is not None else None

        def opened(raw: bytes) -> bool:
            # An entry that cannot be opened can never be served either: removing it is safe.
            if data_key is None:
                return True
            try:
                return condition(_open(data_key, raw, None))
            except EncryptionError:
                return True

        return await self.inner.delete_where(prefix, opened)

    async def close(self) -> None:
        await self.inner.close()
