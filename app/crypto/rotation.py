"""Tenant-key rotation: a new data key for one tenant, its data re-encrypted while the server
keeps serving, then the old key destroyed.

1. `start`: the tenant's key row gets a new key (generation + 1, wrapped by the KEK) and keeps
   the current one as its retired key. New data is sealed under the new generation from then
   on; everything sealed before still opens.
2. Wait `encryption.key_refresh_seconds` and a margin: every process has read the key row
   again by then, so none seals anything under the retired key afterwards.
3. `reseal_tenant` re-seals chunk rows, stored originals and shard files (app/crypto/reseal.py).
4. Only when nothing is left under the retired key is it destroyed; from then on a copy of the
   data taken before the rotation no longer opens with what the database holds.

Running it again after an interruption resumes the rotation in progress; it never starts a
second one on top (at most two generations exist at any time).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.audit.service import audit_service
from app.crypto.repository import tenant_key_repository
from app.crypto.reseal import Converted, left_over, reseal_tenant
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.kit.envelope import KEY_BYTES, EncryptionError
from app.kit.kek import KekError
from app.kit.principal import Principal
from app.models import Job

logger = logging.getLogger(__name__)

# Rounds of re-sealing before giving up: a round finds only what was written under the retired
# key by a process that had not yet read the new key (none after step 2 in practice).
_ROUNDS = 3
# Added to key_refresh_seconds (at most that much again): a process that read the old key
# just before the rotation may still be sealing a batch with it.
_SETTLE_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class Rotation:
    tenant_id: int
    generation: int  # the key generation now in force
    resumed: bool  # an interrupted rotation was finished
    converted: Converted


async def start(runtime: Runtime, tenant_id: int) -> tuple[int, bool]:
    """Give the tenant its next key generation (or find the rotation already in progress);
    (the new generation, whether it was already in progress)."""
    if not runtime.keyring.enabled:
        raise KekError(
            "encryption is off (CAIRN_ENCRYPTION__ENABLED): new data would not be sealed "
            "under the new key"
        )
    kek = runtime.keyring.kek()
    async with runtime.database.sessionmaker() as session, session.begin():
        row = await tenant_key_repository.get(session, tenant_id, for_update=True)
        if row is None:
            raise EncryptionError(
                f"tenant {tenant_id} has no data key yet: nothing is sealed to rotate"
            )
        if row.retired_key is not None:
            return row.generation, True
        raw = os.urandom(KEY_BYTES)
        tenant_key_repository.rotate(row, kek.wrap(tenant_id, raw, row.generation + 1))
        generation = row.generation
    runtime.keyring.forget(tenant_id)
    return generation, False


async def rotate_tenant_key(
    runtime: Runtime,
    tenant_id: int,
    *,
    settle_seconds: float | None = None,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Rotation:
    """Rotate (or finish rotating) the tenant's data key; see the module's steps."""
    generation, resumed = await start(runtime, tenant_id)
    say = progress or (lambda line: logger.info("tenant %s: %s", tenant_id, line))
    refresh = runtime.settings.encryption.key_refresh_seconds
    settle = (
        refresh + min(refresh, _SETTLE_MARGIN_SECONDS) if settle_seconds is None else settle_seconds
    )
    say(
        f"key generation {generation} in force{' (resumed)' if resumed else ''}; waiting "
        f"{settle:.0f} s for every process to use it"
    )
    await sleep(settle)
    runtime.keyring.forget(tenant_id)
    key = await runtime.keyring.for_reading(tenant_id)
    if key is None or key.generation != generation:
        raise EncryptionError(f"tenant {tenant_id}'s key changed during the rotation; run again")
    converted = Converted()
    for _ in range(_ROUNDS):
        converted.add(await reseal_tenant(runtime, tenant_id, key))
        left = await left_over(runtime, tenant_id, key)
        if left.total == 0:
            break
    else:
        raise EncryptionError(
            f"tenant {tenant_id}: {left.total} objects are still sealed under the retired key; "
            "run the rotation again to finish it"
        )
    say(
        f"re-encrypted {converted.chunks} chunk rows, {converted.files} files, "
        f"{converted.shards} shard files"
    )
    async with runtime.database.sessionmaker() as session, session.begin():
        row = await tenant_key_repository.get(session, tenant_id, for_update=True)
        if row is None or row.generation != generation:
            raise EncryptionError(f"tenant {tenant_id}'s key changed during the rotation")
        tenant_key_repository.destroy_retired(row)
    runtime.keyring.forget(tenant_id)
    say(f"the retired key (generation {generation - 1}) is destroyed")
    return Rotation(tenant_id, generation, resumed, converted)


@dataclass(frozen=True)
class KeyState:
    generation: int  # 0: the tenant has no data key
    rotating: bool


async def key_state(runtime: Runtime, tenant_id: int) -> KeyState:
    """The tenant's key generation and whether a rotation is still re-encrypting."""
    async with runtime.database.read_sessionmaker() as session:
        row = await tenant_key_repository.get(session, tenant_id)
    if row is None:
        return KeyState(0, False)
    return KeyState(row.generation, row.retired_key is not None)


async def request_rotation(runtime: Runtime, actor: Principal, tenant_id: int) -> tuple[int, Job]:
    """Put the tenant's next key generation in force now and queue the re-encryption for the
    workers (one job per tenant at a time; audited). The new generation and the job."""
    generation, resumed = await start(runtime, tenant_id)
    async with runtime.database.sessionmaker() as session, session.begin():
        job = await job_repository.open_for_subject(session, JobKind.ROTATE_TENANT_KEY, tenant_id)
        if job is None:
            job = job_repository.add(
                session,
                Job(kind=JobKind.ROTATE_TENANT_KEY, tenant_id=tenant_id, subject_id=tenant_id),
            )
            await session.flush()
        await audit_service.record(
            session,
            action="tenant.key_rotate",
            actor=actor,
            tenant_id=tenant_id,
            target_type="tenant",
            target_id=tenant_id,
            details={"generation": generation, "resumed": resumed},
        )
    return generation, job
