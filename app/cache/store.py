"""A small key-value cache with expiry: process memory (LRU) by default, Redis when configured.

Values are bytes; what they mean is the caller's business (app/chat/answer_cache.py,
app/search/embedding_cache.py). Keys are built by the callers with the tenant first
(`<kind>:<tenant id>:<digest>`), so one tenant's entries can be listed and removed by prefix,
and a key computed for tenant B can never name an entry of tenant A.

A cache is an optimisation: when Redis does not answer, reads are misses and writes are
dropped (logged), and the request is served without it. Removal (`delete_where`, used by
purges) raises instead, so a purge cannot claim to have removed what it did not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from app.kit.settings import Settings

logger = logging.getLogger(__name__)

# How many keys a Redis SCAN step asks for while listing a tenant's entries.
_SCAN_COUNT = 500


class CacheStore(Protocol):
    # "memory" or "redis": receipts say where entries were removed from.
    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def delete_where(self, prefix: str, condition: Callable[[bytes], bool]) -> int:
        """Remove the entries under `prefix` whose value meets `condition`; how many."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """A process's own LRU cache with a time to live per entry."""

    backend = "memory"

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        # The in-process worker pool and the API share one store; keep each step atomic.
        self._lock = threading.Lock()

    async def get(self, key: str) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            expires, value = found
            if expires <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    async def delete_where(self, prefix: str, condition: Callable[[bytes], bool]) -> int:
        with self._lock:
            doomed = [
                key
                for key, (_, value) in self._entries.items()
                if key.startswith(prefix) and condition(value)
            ]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        with self._lock:
            self._entries.clear()


class RedisStore:
    """Entries in Redis under `key_prefix`, expiring by Redis's own TTL."""

    backend = "redis"

    def __init__(self, url: str, *, key_prefix: str) -> None:
        self._client = redis_asyncio.Redis.from_url(url)
        self._prefix = key_prefix + ":"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(self._prefix + key)
        except RedisError as exc:
            logger.warning("cache read failed, served without the cache: %s", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        try:
            await self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            logger.warning("cache write failed, entry dropped: %s", exc)

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete(self._prefix + key)
        except RedisError as exc:
            logger.warning("cache delete failed: %s", exc)

    async def delete_where(self, prefix: str, condition: Callable[[bytes], bool]) -> int:
        removed = 0
        # Key prefixes are built from digits, letters, ":" and "-" (no glob characters).
        pattern = self._prefix + prefix + "*"
        async for key in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
            value = await self._client.get(key)
            if isinstance(value, bytes) and condition(value):
                removed += int(await self._client.delete(key))
        return removed

    async def close(self) -> None:
        await self._client.aclose()


def store_for(settings: Settings) -> CacheStore:
    """Redis when `redis_url` is set, otherwise this process's memory."""
    if settings.redis_url:
        return RedisStore(settings.redis_url, key_prefix=settings.cache.key_prefix)
    return MemoryStore(settings.cache.memory_max_entries)
