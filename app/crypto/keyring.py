"""Per-process cache of unwrapped tenant data keys.

A key is unwrapped with the KEK once and kept in memory; with encryption enabled the first
write for a tenant creates its key (random, wrapped, committed before any data is sealed under
it). `forget` drops cached keys: a shred must not leave the key usable in this process. Other
processes keep their cached copy until they restart, which cannot resurrect data: the shred
also deletes every row and file sealed under it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.crypto.repository import tenant_key_repository
from app.kit.db import Database
from app.kit.envelope import KEY_BYTES, DataKey
from app.kit.kek import Kek, KekError, load_kek
from app.kit.settings import EncryptionSettings
from app.models import TenantKey


class Keyring:
    def __init__(
        self,
        database: Database,
        settings: EncryptionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.settings = settings
        self._kek: Kek | None = None
        # tenant id -> (its key, when it was read): read again after key_refresh_seconds, so
        # a tenant-key rotation done by another process reaches this one.
        self._keys: dict[int, tuple[DataKey, float]] = {}
        self._creating = asyncio.Lock()
        self._clock = clock

    @property
    def enabled(self) -> bool:
        """Whether new data is sealed."""
        return self.settings.enabled

    @property
    def configured(self) -> bool:
        """Whether a KEK is configured (sealed data can be read)."""
        return self.settings.kek_file is not None

    def kek(self) -> Kek:
        """The KEK, read from its file on first use (KekError when missing or too open)."""
        if self._kek is None:
            if self.settings.kek_file is None:
                raise KekError("encryption.kek_file is not set (CAIRN_ENCRYPTION__KEK_FILE)")
            self._kek = load_kek(self.settings.kek_file)
        return self._kek

    async def for_writing(
        self, tenant_id: int, session: AsyncSession | None = None
    ) -> DataKey | None:
        """The key new data of the tenant is sealed with; None while encryption is off.

        A missing key is created in `session` when one is given: a request holding SQLite's
        only writer connection would wait forever for a second transaction. The key is then
        cached only once that session commits, so a rolled-back key is never used again."""
        if not self.enabled:
            return None
        if session is None:
            return await self._get(tenant_id, create=True)
        found = await self._get(tenant_id, create=False)
        if found is not None:
            return found
        kek = self.kek()
        raw = os.urandom(KEY_BYTES)
        tenant_key_repository.add(session, tenant_id, kek.wrap(tenant_id, raw), kek.fingerprint)
        await session.flush()
        key = DataKey.from_bytes(tenant_id, raw)

        def remember(_: Any) -> None:
            self._keys.setdefault(tenant_id, (key, self._clock()))

        event.listen(session.sync_session, "after_commit", remember, once=True)
        return key

    async def ensure_keys(self) -> int:
        """Give every tenant without a data key one (at start-up with encryption on, so
        requests rarely create keys); how many were created."""
        if not self.enabled:
            return 0
        async with self.database.read_sessionmaker() as session:
            missing = await tenant_key_repository.tenants_without_key(session)
        for tenant_id in missing:
            await self._get(tenant_id, create=True)
        return len(missing)

    async def for_reading(self, tenant_id: int) -> DataKey | None:
        """The tenant's key if it has one and a KEK is configured; None otherwise (then only
        plaintext can be read, and sealed data fails with a clear error)."""
        if not self.enabled and not self.configured:
            return None
        return await self._get(tenant_id, create=False)

    async def _get(self, tenant_id: int, *, create: bool) -> DataKey | None:
        cached = self._keys.get(tenant_id)
        if cached is not None and self._clock() - cached[1] < self.settings.key_refresh_seconds:
            return cached[0]
        kek = self.kek()
        async with self.database.read_sessionmaker() as session:
            row = await tenant_key_repository.get(session, tenant_id)
            key = unwrap_row(kek, row) if row is not None else None
        if key is None:
            if not create:
                return None
            async with self._creating:
                return await self._create(kek, tenant_id)
        self._keys[tenant_id] = (key, self._clock())
        return key

    async def _create(self, kek: Kek, tenant_id: int) -> DataKey:
        raw = os.urandom(KEY_BYTES)
        try:
            async with self.database.sessionmaker() as session, session.begin():
                # Another process may have created it since the read above: keep theirs.
                row = await tenant_key_repository.get(session, tenant_id)
                if row is None:
                    tenant_key_repository.add(
                        session, tenant_id, kek.wrap(tenant_id, raw), kek.fingerprint
                    )
                    key = DataKey.from_bytes(tenant_id, raw)
                else:
                    key = unwrap_row(kek, row)
        except IntegrityError:
            # Lost a race with another process's insert: read the key it committed.
            async with self.database.read_sessionmaker() as session:
                row = await tenant_key_repository.get(session, tenant_id)
                if row is None:
                    raise
                key = unwrap_row(kek, row)
        self._keys[tenant_id] = (key, self._clock())
        return key

    def use_kek(self, kek: Kek) -> None:
        """Unwrap with this KEK from now on (after a rotation in this process)."""
        self._kek = kek

    def forget(self, tenant_id: int | None = None) -> None:
        """Drop one tenant's cached key (after a shred), or every one."""
        if tenant_id is None:
            self._keys.clear()
        else:
            self._keys.pop(tenant_id, None)


def unwrap_row(kek: Kek, row: TenantKey) -> DataKey:
    """A tenant's key from its row: the current generation and, during a rotation, the
    retired one."""
    tenant_id, fingerprint = row.tenant_id, row.kek_fingerprint
    retired: dict[int, bytes] = {}
    if row.retired_key is not None and row.retired_generation is not None:
        retired[row.retired_generation] = kek.unwrap(
            tenant_id, row.retired_key, fingerprint, row.retired_generation
        )
    return DataKey.from_bytes(
        tenant_id,
        kek.unwrap(tenant_id, row.wrapped_key, fingerprint, row.generation),
        row.generation,
        retired,
    )
