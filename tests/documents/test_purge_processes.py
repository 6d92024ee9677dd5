"""Issue 12 across real processes: the retention purge run by two `cairn worker` processes at
once (in-process pools, then Celery on Redis) purges each document exactly once, one
`retention_purge` job per period; and a purge whose worker is SIGKILLed halfway through
rewriting the shards is finished, exactly once and verified, by another worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.jobs.kinds import JobKind
from app.kit.public_ids import IdKind
from app.kit.settings import Settings
from app.models import Chunk, DeletionReceipt, Document, IndexShard, Job, PeriodicRun
from app.models.base import utcnow
from app.search.index.erasure import files_holding, ids_in_file, shard_files
from tests.conftest import REDIS_URL, Api, require_service
from tests.helpers import key_of, public_of
from tests.ingest.worker_process import (
    assert_indexed_exactly_once,
    kill_group,
    long_text,
    poll,
    spawn_worker,
    stop,
    upload_app,
    worker_env,
)

pytestmark = pytest.mark.slow

PERIOD = 2.0  # seconds between retention purges in these tests
# Two processes race for each period; a job's created_at trails its period's start by the
# time the winner takes to write it (a busy SQLite), never by anything near a period.
PERIOD_SLACK = 0.5
# Only the retention purge is periodic here: compaction and audit checkpoints are off.
PERIODIC_ENV = {
    "CAIRN_WORKER__RETENTION_PURGE_SECONDS": str(PERIOD),
    "CAIRN_WORKER__PERIODIC_CHECK_SECONDS": "0.3",
    "CAIRN_WORKER__SHARD_COMPACTION_SECONDS": "0",
    "CAIRN_WORKER__AUDIT_CHECKPOINT_SECONDS": "0",
}
DOCUMENTS = [
    b"The hydraulic pumps of line four were serviced in May.",
    b"Valve 17 in the east basement leaked after the flood.",
    b"The boiler room inspection found two cracked welds.",
]


@pytest.fixture
def broker_url() -> str:
    require_service("Redis", REDIS_URL, 6379)
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


def _alive(worker: subprocess.Popen[bytes], log: Path) -> None:
    assert worker.poll() is None, log.read_text()


async def _upload(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, data: bytes
) -> int:
    response = await client.post(
        "/api/v1/tenants/ops/documents", files={"file": (name, data)}, headers=headers
    )
    assert response.status_code == 202, response.text
    return key_of(response.json()["id"])


async def _indexed(app: FastAPI, document_ids: list[int]) -> bool:
    """Every document ready and every chunk of the deployment in a shard."""
    async with app.state.database.read_sessionmaker() as session:
        statuses = list(
            await session.scalars(select(Document.status).where(Document.id.in_(document_ids)))
        )
        assert "failed" not in statuses
        pending = await session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.shard_no.is_(None))
        )
    return statuses == ["ready"] * len(document_ids) and pending == 0


async def _tenant_of(app: FastAPI, document_id: int) -> int:
    async with app.state.database.read_sessionmaker() as session:
        document = await session.get(Document, document_id)
        assert document is not None
        return int(document.tenant_id)


async def _chunk_ids(app: FastAPI, document_ids: list[int]) -> np.ndarray:
    async with app.state.database.read_sessionmaker() as session:
        ids = await session.scalars(select(Chunk.id).where(Chunk.document_id.in_(document_ids)))
        return np.array(sorted(ids), dtype=np.int64)


async def _receipts(app: FastAPI, document_ids: list[int]) -> list[DeletionReceipt]:
    async with app.state.database.read_sessionmaker() as session:
        return list(
            await session.scalars(
                select(DeletionReceipt).where(
                    DeletionReceipt.subject_type == "document",
                    DeletionReceipt.subject_id.in_(document_ids),
                )
            )
        )


async def _jobs(app: FastAPI, kind: JobKind) -> list[Job]:
    async with app.state.database.read_sessionmaker() as session:
        return list(await session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


async def _assert_purged_once(
    app: FastAPI, document_ids: list[int], chunk_ids: np.ndarray, tenant_id: int
) -> dict[int, Job]:
    """One receipt per document, done and verified; one purge job per document, done; no row
    or shard file (any version) left holding any of it. The purge jobs, by document."""
    receipts = await _receipts(app, document_ids)
    assert Counter(r.subject_id for r in receipts) == Counter(document_ids)
    for receipt in receipts:
        assert receipt.status == "done", (receipt.status, receipt.error)
        assert json.loads(receipt.verification)["passed"] is True
        assert receipt.receipt_hash
        assert "pending_chunk_ids" not in json.loads(receipt.removed)
    purges = await _jobs(app, JobKind.PURGE)
    assert Counter(j.subject_id for j in purges) == Counter(document_ids)
    assert {j.status for j in purges} == {"done"}
    async with app.state.database.read_sessionmaker() as session:
        documents = await session.scalar(
            select(func.count()).select_from(Document).where(Document.id.in_(document_ids))
        )
        chunks = await session.scalar(
            select(func.count())
            .select_from(Chunk)
            .where(Chunk.document_id.in_(document_ids) | Chunk.id.in_(chunk_ids.tolist()))
        )
    assert (documents, chunks) == (0, 0)
    assert files_holding(app.state.settings.index_dir, tenant_id, chunk_ids) == []
    return {int(j.subject_id): j for j in purges if j.subject_id is not None}


@pytest.fixture
async def ops(
    settings: Settings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, dict[str, str]]]:
    """The upload app (no workers of its own), tenant `ops` and the headers of its admin."""
    async with upload_app(settings) as (app, client):
        api = Api(client)
        await api.tenant("ops")
        yield app, client, await api.user("owner", ops="admin")


async def _retention_by_two_workers(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], env: dict[str, str], tmp: Path
) -> None:
    """Two workers ingest, then purge through the retention purge, the soft-deleted documents
    backdated past retention; a kept document stays indexed."""
    kept = await _upload(client, headers, "kept.txt", b"The kept register lists spare gaskets.")
    doomed = [await _upload(client, headers, f"d{n}.txt", data) for n, data in enumerate(DOCUMENTS)]
    logs = [tmp / "first.log", tmp / "second.log"]
    workers = [spawn_worker(env, log) for log in logs]
    try:

        def alive() -> None:
            for worker, log in zip(workers, logs, strict=True):
                _alive(worker, log)

        async def indexed() -> bool:
            alive()
            return await _indexed(app, [kept, *doomed])

        await poll(indexed, timeout=60, every=0.3)
        chunk_ids = await _chunk_ids(app, doomed)
        assert chunk_ids.size >= len(doomed)
        tenant_id = await _tenant_of(app, kept)
        for document_id in doomed:
            deleted = await client.delete(
                f"/api/v1/tenants/ops/documents/{public_of(IdKind.DOCUMENT, document_id)}",
                headers=headers,
            )
            assert deleted.status_code == 202, deleted.text
        days = app.state.settings.retention_days
        async with app.state.database.sessionmaker() as session, session.begin():
            await session.execute(
                update(Document)
                .where(Document.id.in_(doomed))
                .values(deleted_at=utcnow() - timedelta(days=days, minutes=1))
            )

        async def purged() -> bool:
            alive()
            done = [r for r in await _receipts(app, doomed) if r.status == "done"]
            return len(done) == len(doomed)

        await poll(purged, timeout=40, every=0.3)
        finished = max(j.created_at for j in await _jobs(app, JobKind.PURGE))

        async def a_later_period_ran() -> bool:
            alive()
            later = [
                j
                for j in await _jobs(app, JobKind.RETENTION_PURGE)
                if j.created_at > finished and j.status == "done"
            ]
            return bool(later)

        # One more period passes with both workers on it: nothing is purged twice.
        await poll(a_later_period_ran, timeout=3 * PERIOD + 5, every=0.3)
        alive()
    finally:
        for worker in workers:
            stop(worker)

    await _assert_purged_once(app, doomed, chunk_ids, tenant_id)
    retention = await _jobs(app, JobKind.RETENTION_PURGE)
    assert len(retention) >= 2
    assert {j.status for j in retention} == {"done"}
    starts = sorted(j.created_at for j in retention)
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= PERIOD - PERIOD_SLACK, gaps  # never two jobs for one period
    async with app.state.database.read_sessionmaker() as session:
        run = await session.get(PeriodicRun, JobKind.RETENTION_PURGE.value)
    assert run is not None
    assert run.last_job_id == retention[-1].id
    await assert_indexed_exactly_once(app, kept)


async def test_retention_purge_by_two_pool_workers(
    settings: Settings,
    ops: tuple[FastAPI, httpx.AsyncClient, dict[str, str]],
    tmp_path: Path,
) -> None:
    app, client, headers = ops
    env = worker_env(settings, **PERIODIC_ENV)
    await _retention_by_two_workers(app, client, headers, env, tmp_path)


@pytest.mark.redis
async def test_retention_purge_by_two_celery_workers(
    settings: Settings, broker_url: str, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"broker_url": broker_url})
    env = worker_env(settings, CAIRN_BROKER_URL=broker_url, **PERIODIC_ENV)
    async with upload_app(settings) as (app, client):
        api = Api(client)
        await api.tenant("ops")
        headers = await api.user("owner", ops="admin")
        await _retention_by_two_workers(app, client, headers, env, tmp_path)


def _signal(worker: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    os.killpg(worker.pid, sig)


async def _shard_versions(app: FastAPI, tenant_id: int) -> dict[tuple[str, int], int]:
    async with app.state.database.read_sessionmaker() as session:
        rows = await session.scalars(select(IndexShard).where(IndexShard.tenant_id == tenant_id))
        return {(s.kind, s.shard_no): s.version for s in rows}


async def test_purge_finished_after_its_worker_is_sigkilled_midway(
    settings: Settings,
    ops: tuple[FastAPI, httpx.AsyncClient, dict[str, str]],
    tmp_path: Path,
) -> None:
    """Eight chunks a shard: the document spans dozens of shards, each rewritten in its own
    step. The victim worker is run in slices of a few milliseconds (SIGCONT, SIGSTOP) until
    it has rewritten some of them but not all, then SIGKILLed; a second worker takes the job
    once its lease runs out and finishes the purge."""
    app, client, headers = ops
    env = worker_env(
        settings,
        CAIRN_INDEX__SHARD_CAPACITY="8",
        CAIRN_WORKER__EMBED_BATCH="32",
        CAIRN_WORKER__RETENTION_PURGE_SECONDS="0",
        CAIRN_WORKER__SHARD_COMPACTION_SECONDS="0",
        CAIRN_WORKER__AUDIT_CHECKPOINT_SECONDS="0",
    )
    kept = await _upload(client, headers, "kept.txt", b"The kept register lists spare gaskets.")
    doomed = await _upload(client, headers, "inspections.txt", long_text(160))
    victim_log = tmp_path / "victim.log"
    victim = spawn_worker(env, victim_log)
    try:

        async def indexed() -> bool:
            _alive(victim, victim_log)
            return await _indexed(app, [kept, doomed])

        await poll(indexed, timeout=90, every=0.3)
        tenant_id = await _tenant_of(app, doomed)
        chunk_ids = await _chunk_ids(app, [doomed])
        before = await _shard_versions(app, tenant_id)
        index_dir = app.state.settings.index_dir
        holding = {  # the current shards holding its chunks: each rewritten in its own step
            (shard.kind, shard.shard_no)
            for shard in shard_files(index_dir, tenant_id)
            if shard.version == before.get((shard.kind, shard.shard_no))
            and np.isin(ids_in_file(shard), chunk_ids).any()
        }
        assert len(holding) >= 20, holding

        _signal(victim, signal.SIGSTOP)
        purge = await client.delete(
            f"/api/v1/tenants/ops/documents/{public_of(IdKind.DOCUMENT, doomed)}?purge=true",
            headers=headers,
        )
        assert purge.status_code == 202, purge.text

        async def rewritten() -> int:
            now = await _shard_versions(app, tenant_id)
            return sum(now[shard] > before[shard] for shard in holding)

        slices = 0
        while (done := await rewritten()) == 0:
            assert slices < 5000, "the victim never started the purge"
            _signal(victim, signal.SIGCONT)
            time.sleep(0.004)
            _signal(victim, signal.SIGSTOP)
            slices += 1
        # Caught in the middle: some shards rewritten, others not, every row still there.
        assert 0 < done < len(holding), (done, len(holding))
        [job] = await _jobs(app, JobKind.PURGE)
        assert (job.status, job.attempts) == ("running", 1)
        assert job.locked_by is not None
        assert job.locked_by.endswith(f":{victim.pid}")
        [receipt] = await _receipts(app, [doomed])
        assert receipt.status == "pending"
        assert (await _chunk_ids(app, [doomed])).size == chunk_ids.size
        kill_group(victim)
    finally:
        if victim.poll() is None:
            _signal(victim, signal.SIGCONT)
        stop(victim)

    rescuer_log = tmp_path / "rescuer.log"
    rescuer = spawn_worker(env, rescuer_log)
    try:

        async def purge_finished() -> bool:
            # The receipt closes in one commit and the job row in the next: wait for both.
            _alive(rescuer, rescuer_log)
            closed = any(r.status != "pending" for r in await _receipts(app, [doomed]))
            return closed and all(j.status != "running" for j in await _jobs(app, JobKind.PURGE))

        await poll(purge_finished, timeout=60, every=0.3)
    finally:
        stop(rescuer)

    jobs = await _assert_purged_once(app, [doomed], chunk_ids, tenant_id)
    assert jobs[doomed].attempts == 2
    assert (jobs[doomed].locked_by or "").endswith(f":{rescuer.pid}")
    [receipt] = await _receipts(app, [doomed])
    removed = json.loads(receipt.removed)
    assert removed["chunks"] == chunk_ids.size
    # Counts are recorded with each step's own commit, so the killed worker's share counts.
    assert removed["vectors"] == removed["postings"] == chunk_ids.size
    await assert_indexed_exactly_once(app, kept)
