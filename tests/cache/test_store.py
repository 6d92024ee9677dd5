"""The cache store on both backends: expiry, LRU bound, removal by tenant prefix."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from app.cache.store import CacheStore, MemoryStore, RedisStore
from app.crypto.cache import SealedStore
from app.kit.envelope import DataKey
from tests.conftest import REDIS_URL, require_service


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CacheStore]:
    if request.param == "memory":
        memory = MemoryStore(max_entries=100)
        yield memory
        await memory.close()
        return
    require_service("Redis", REDIS_URL, 6379)
    # A prefix of its own: other runs on the same Redis never meet these keys.
    redis = RedisStore(REDIS_URL, key_prefix=f"cairn-test-{uuid.uuid4().hex}")
    yield redis
    await redis.delete_where("", lambda _: True)
    await redis.close()


async def test_values_come_back_until_they_expire(store: CacheStore) -> None:
    await store.set("answer:1:a", b"kept", ttl=30)
    await store.set("answer:1:b", b"brief", ttl=0.2)
    assert await store.get("answer:1:a") == b"kept"
    assert await store.get("answer:1:b") == b"brief"
    assert await store.get("answer:1:missing") is None
    await asyncio.sleep(0.4)
    assert await store.get("answer:1:b") is None
    assert await store.get("answer:1:a") == b"kept"
    await store.delete("answer:1:a")
    assert await store.get("answer:1:a") is None


async def test_removal_stays_inside_the_tenant_prefix(store: CacheStore) -> None:
    for tenant in (1, 11, 2):
        for n in range(3):
            await store.set(f"answer:{tenant}:{n}", f"doc{n}".encode(), ttl=30)
    # Tenant 1 only: "answer:1:" must not match tenant 11's keys.
    removed = await store.delete_where("answer:1:", lambda value: value != b"doc2")
    assert removed == 2
    assert await store.get("answer:1:0") is None
    assert await store.get("answer:1:2") == b"doc2"
    for tenant in (11, 2):
        assert [await store.get(f"answer:{tenant}:{n}") for n in range(3)] == [
            b"doc0",
            b"doc1",
            b"doc2",
        ]


async def test_memory_store_evicts_the_least_recently_used() -> None:
    store = MemoryStore(max_entries=3)
    for key in ("a", "b", "c"):
        await store.set(key, key.encode(), ttl=30)
    assert await store.get("a") == b"a"  # now b is the least recently used
    await store.set("d", b"d", ttl=30)
    assert len(store) == 3
    assert await store.get("b") is None
    assert [await store.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]


async def test_an_unreachable_redis_is_a_miss_not_an_error() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", key_prefix="cairn-test")
    await store.set("answer:1:a", b"x", ttl=30)
    assert await store.get("answer:1:a") is None
    await store.close()


class _TenantKeys:
    """One data key per tenant, as the keyring hands them out."""

    enabled = True

    def __init__(self) -> None:
        self.keys = {1: DataKey.from_bytes(1, os.urandom(32))}

    async def for_reading(self, tenant_id: int) -> DataKey | None:
        return self.keys.get(tenant_id)


async def test_sealed_entries_hold_no_readable_text_and_expire(store: CacheStore) -> None:
    # With encryption on, Runtime wraps the store (memory or Redis) in a SealedStore: what
    # Redis holds, and writes to its dumps, is ciphertext, and it is gone after the TTL.
    canary = b"Zephyrquokka7731 answer text"
    sealed = SealedStore(store, _TenantKeys())  # type: ignore[arg-type]
    await sealed.set("answer:1:q", canary, ttl=0.3)
    raw = await store.get("answer:1:q")
    assert raw is not None
    assert b"Zephyrquokka7731" not in raw
    assert await sealed.get("answer:1:q") == canary
    await asyncio.sleep(0.5)
    assert await store.get("answer:1:q") is None
    assert await sealed.get("answer:1:q") is None
