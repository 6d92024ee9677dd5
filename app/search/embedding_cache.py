"""The query-embedding cache: a query asked again in the same tenant is not embedded again.

Entries are per tenant (`query_embedding:<tenant id>:<digest>`): a vector is derived from a
query only, but whether a query was cached says that someone asked it, and tenant B must not
learn what tenant A's members ask. The digest covers the embedder's configuration and the
query with its whitespace normalised; the value is the vector and the name of the model that
made it (checked against the index like a freshly computed one).
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np

from app.cache.store import CacheStore
from app.kit.metrics import CACHE_LOOKUPS
from app.kit.settings import EmbeddingConfig

logger = logging.getLogger(__name__)

KIND = "query_embedding"


class QueryEmbeddingCache:
    def __init__(self, store: CacheStore, config: EmbeddingConfig, *, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        # The embedder is named by its whole configuration: another model, path or pooling is
        # another vector.
        self._embedder = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)

    def key(self, tenant_id: int, text: str) -> str:
        material = self._embedder + "\0" + " ".join(text.split())
        return f"{KIND}:{tenant_id}:{hashlib.sha256(material.encode()).hexdigest()}"

    async def get(self, tenant_id: int, text: str) -> tuple[np.ndarray, str | None] | None:
        """The cached vector and embedder name, or None."""
        raw = await self.store.get(self.key(tenant_id, text))
        found = _decode(raw) if raw is not None else None
        CACHE_LOOKUPS.labels(KIND, "hit" if found is not None else "miss").inc()
        return found

    async def put(
        self, tenant_id: int, text: str, vector: np.ndarray, embedder: str | None
    ) -> None:
        header = json.dumps({"embedder": embedder}).encode()
        body = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        await self.store.set(self.key(tenant_id, text), header + b"\n" + body, ttl=self.ttl)


def _decode(raw: bytes) -> tuple[np.ndarray, str | None] | None:
    header, sep, body = raw.partition(b"\n")
    try:
        if not sep or len(body) % 4:
            raise ValueError("truncated entry")
        name = json.loads(header).get("embedder")
    except ValueError as exc:
        logger.info("unreadable cached query embedding ignored: %s", exc)
        return None
    return np.frombuffer(body, dtype="<f4").astype(np.float32), name
