"""What background work runs with — settings, database, content store, indexer, embedder.

Every process gets it as part of its container (app/container.py's `Container` extends it):
the API and its in-process pool, `cairn worker` without a broker, the CLI. Only a Celery worker
process builds the bare `Runtime` (app/jobs/celery_app.py), which the container cannot be
imported into."""

from __future__ import annotations

import asyncio
from datetime import datetime

from app.cache.store import CacheStore, store_for
from app.crypto.cache import SealedStore
from app.crypto.keyring import Keyring
from app.kit.db import Database, database_for
from app.kit.settings import Settings
from app.kit.storage import ContentStore
from app.models.base import utcnow
from app.search.index.writer import Indexer
from ingest.embedding import Embedder, load_embedder


class Runtime:
    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self.database = database or database_for(settings)
        # Unwrapped tenant data keys, one cache per process (encryption at rest, app/crypto).
        self.keyring = Keyring(self.database, settings.encryption)
        self.store = ContentStore(settings.files_dir, self.keyring)
        self.indexer = Indexer(self.database, settings.index_dir, settings.index, self.keyring)
        # The answer and query-embedding caches; one per process, so that the API and its
        # in-process workers (purges) see the same memory cache.
        self.cache: CacheStore = store_for(settings)
        if settings.encryption.enabled:
            # Cached answers and query vectors are tenant-derived: sealed like the rest.
            self.cache = SealedStore(self.cache, self.keyring)
        self._embedder: Embedder | None = None

    async def embedder(self) -> Embedder:
        """The embedding model that embeds documents, loaded on first use (off the event loop);
        not the instance searches embed queries with (see load_embedder)."""
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(
                load_embedder, self.settings.embedding, ingestion=True
            )
        return self._embedder

    def now(self) -> datetime:
        """The time periodic work judges "due" and "expired" by (tests move it)."""
        return utcnow()

    async def close(self) -> None:
        await self.cache.close()
        await self.database.dispose()
