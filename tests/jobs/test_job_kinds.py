"""The background-job system's own guarantees, on SQLite and PostgreSQL: a runner claims only
the kinds it runs, the stale-job sweep keeps kinds apart, a job reaches the runners only once
the transaction that created it committed, the job and index modules stay importable without
the web app, and shard compaction keeps what readers may still load."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.celery_app import RUN_JOB, _sweep
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.jobs.runner import JobClaimer
from app.jobs.runtime import Runtime
from app.kit.settings import Settings
from app.models import IndexShard, Job, Tenant
from app.models.base import utcnow
from app.search.index import build_bm25_shard, build_shard, save_bm25_shard, save_shard
from app.search.index.erasure import compact_shards
from app.search.index.layout import shard_path, tenant_dir
from app.search.index.vector_shard import VectorShardConfig
from tests.conftest import Api, make_settings
from tests.documents.test_endpoints import upload

ROOT = Path(__file__).resolve().parents[2]
INGEST, PURGE = JobKind.INGEST.value, JobKind.PURGE.value


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """No embedded workers (the tests claim and dispatch themselves) and no periodic work (a
    sweep then sends only the stale jobs)."""
    return make_settings(
        database_url,
        tmp_path / "data",
        embedded_workers=False,
        worker={
            "retention_purge_seconds": 0,
            "shard_compaction_seconds": 0,
            "audit_checkpoint_seconds": 0,
        },
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings)
    try:
        yield runtime
    finally:
        await runtime.close()


async def _add_job(
    runtime: Runtime,
    kind: str,
    *,
    queued_for: timedelta = timedelta(0),
    expired_lease: bool = False,
) -> int:
    """A queued job runnable since `queued_for` ago, or (`expired_lease`) a running one whose
    worker stopped renewing its lease."""
    now = utcnow()
    job = Job(kind=kind, run_after=now - queued_for)
    if expired_lease:
        job.status, job.attempts, job.locked_by = "running", 1, "dead-worker"
        job.lease_until = now - timedelta(minutes=5)
    async with runtime.database.sessionmaker() as session, session.begin():
        job_repository.add(session, job)
        await session.flush()
        return job.id


async def _jobs(runtime: Runtime) -> dict[int, Job]:
    async with runtime.database.read_sessionmaker() as session:
        return {job.id: job for job in await session.scalars(select(Job))}


# (1) A runner claims only the kinds it runs.


@pytest.mark.parametrize(("mine", "other"), [(INGEST, PURGE), (PURGE, INGEST)])
async def test_a_claimer_never_takes_a_job_of_another_kind(
    runtime: Runtime, mine: str, other: str
) -> None:
    # The other kind's jobs come first, so an oldest-first claim that ignored kinds takes them.
    other_queued = await _add_job(runtime, other)
    other_lapsed = await _add_job(runtime, other, expired_lease=True)
    my_queued = await _add_job(runtime, mine)
    my_lapsed = await _add_job(runtime, mine, expired_lease=True)
    claimer = JobClaimer(runtime, worker_id="me", kinds=[mine])

    # Asked by id (a Celery message), a job of another kind is refused too.
    assert await claimer.claim(other_queued) is None
    assert await claimer.claim(other_lapsed) is None
    claimed = [await claimer.claim() for _ in range(3)]
    assert [job.id if job else None for job in claimed] == [my_queued, my_lapsed, None]
    assert {job.kind for job in claimed if job} == {mine}

    jobs = await _jobs(runtime)
    assert (jobs[other_queued].status, jobs[other_queued].attempts) == ("queued", 0)
    assert jobs[other_queued].locked_by is None
    assert (jobs[other_lapsed].locked_by, jobs[other_lapsed].attempts) == ("dead-worker", 1)
    # ... and what is left is still there for a runner of that kind.
    theirs = JobClaimer(runtime, worker_id="them", kinds=[other])
    taken = [await theirs.claim() for _ in range(3)]
    assert [job.id if job else None for job in taken] == [other_queued, other_lapsed, None]


# (2) The stale-job sweep.


async def _stale_world(runtime: Runtime, older_than: timedelta) -> dict[str, int]:
    return {
        "ingest_queued": await _add_job(runtime, INGEST, queued_for=older_than * 2),
        "purge_queued": await _add_job(runtime, PURGE, queued_for=older_than * 2),
        "ingest_lapsed": await _add_job(runtime, INGEST, expired_lease=True),
        "purge_lapsed": await _add_job(runtime, PURGE, expired_lease=True),
        # Queued only just now: a runner may be about to take it; not stale yet.
        "purge_fresh": await _add_job(runtime, PURGE),
    }


async def test_stale_ids_only_lists_the_kinds_asked_for(runtime: Runtime) -> None:
    older_than = timedelta(minutes=1)
    ids = await _stale_world(runtime, older_than)
    async with runtime.database.read_sessionmaker() as session:

        async def stale(*kinds: str) -> set[int]:
            return set(
                await job_repository.stale_ids(session, older_than=older_than, kinds=list(kinds))
            )

        assert await stale(INGEST) == {ids["ingest_queued"], ids["ingest_lapsed"]}
        assert await stale(PURGE) == {ids["purge_queued"], ids["purge_lapsed"]}
        assert await stale(INGEST, PURGE) == set(ids.values()) - {ids["purge_fresh"]}
        assert await stale(JobKind.SHARD_COMPACTION.value) == set()


class _FakeCelery:
    """Records what the sweep sends to the broker."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send_task(self, name: str, args: list[Any]) -> None:
        assert name == RUN_JOB
        self.sent.append(int(args[0]))


async def test_the_sweep_resends_stale_jobs_with_their_kinds(
    runtime: Runtime, settings: Settings
) -> None:
    older_than = timedelta(seconds=settings.worker.sweep_seconds)
    ids = await _stale_world(runtime, older_than)
    before = await _jobs(runtime)
    broker = _FakeCelery()
    await _sweep(settings, broker)

    assert sorted(broker.sent) == sorted(set(ids.values()) - {ids["purge_fresh"]})
    after = await _jobs(runtime)
    # A re-send is only a message: kinds and states stay as they were.
    assert {i: (j.kind, j.status) for i, j in after.items()} == {
        i: (j.kind, j.status) for i, j in before.items()
    }
    # The queued ones' clocks restarted: the next sweep does not send them again.
    again = _FakeCelery()
    await _sweep(settings, again)
    assert not set(again.sent) & {ids["ingest_queued"], ids["purge_queued"]}

    # Each re-sent message is taken by a runner of its job's kind, and only by that one.
    ingest = JobClaimer(runtime, worker_id="ingest-runner", kinds=[INGEST])
    purge = JobClaimer(runtime, worker_id="purge-runner", kinds=[PURGE])
    for job_id in broker.sent:
        right, wrong = (ingest, purge) if after[job_id].kind == INGEST else (purge, ingest)
        assert await wrong.claim(job_id) is None
        claimed = await right.claim(job_id)
        assert claimed is not None
        assert claimed.kind == after[job_id].kind


# (3) A job reaches the runners only after the transaction that created it committed.


class _VisibilityCheckingDispatcher:
    """Records each job it is told about and whether another connection could see its row at
    that moment (a runner woken earlier finds nothing, or a Celery message names a job that
    is not there)."""

    def __init__(self, app: FastAPI) -> None:
        self.database = app.state.database
        self.seen: list[tuple[int, str | None]] = []

    def enqueue(self, job_id: int) -> None:
        # Synchronous, like the real dispatchers; reads on a connection of its own.
        with self.database.blocking_read_engine.connect() as conn:
            kind = conn.execute(
                text("SELECT kind FROM jobs WHERE id = :id"), {"id": job_id}
            ).scalar()
        self.seen.append((job_id, kind))


@pytest.fixture
async def editor(api: Api) -> dict[str, str]:
    await api.tenant("hr")
    return await api.user("ed", hr="editor")


@pytest.fixture
def dispatcher(app: FastAPI) -> Iterator[_VisibilityCheckingDispatcher]:
    real = app.state.dispatcher
    app.state.dispatcher = _VisibilityCheckingDispatcher(app)
    yield app.state.dispatcher
    app.state.dispatcher = real


async def test_an_upload_is_dispatched_after_its_commit(
    editor: dict[str, str],
    client: httpx.AsyncClient,
    dispatcher: _VisibilityCheckingDispatcher,
    runtime: Runtime,
) -> None:
    response = await upload(client, editor, "notes.txt", b"alpha beta gamma")
    assert response.status_code == 202, response.text
    (job_id,) = [job.id for job in (await _jobs(runtime)).values()]
    # Sent once, and the row was already visible to everyone else when it was.
    assert dispatcher.seen == [(job_id, INGEST)]


async def test_an_upload_whose_transaction_rolls_back_sends_nothing(
    editor: dict[str, str],
    app: FastAPI,
    dispatcher: _VisibilityCheckingDispatcher,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing_commit(self: AsyncSession) -> None:
        raise RuntimeError("the commit failed")

    # The request's session commits once, after the endpoint returned (app/kit/db.py): make
    # exactly that commit fail. Sessions opened with `session.begin()` do not call it.
    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://cairn.test") as client:
        response = await upload(client, editor, "notes.txt", b"alpha beta gamma")
    monkeypatch.undo()
    assert response.status_code == 500, response.text
    assert await _jobs(runtime) == {}
    assert dispatcher.seen == []


# (4) Import direction: tests/test_architecture.py.


# (5) Shard compaction.

DIM = 8


def _write_versions(root: Path, tenant_id: int, shard_no: int, versions: list[int]) -> None:
    """Real vector and BM25 files of one shard, version k holding k chunks (as successive
    index flushes leave them)."""
    rng = np.random.default_rng(tenant_id * 100 + shard_no)
    config = VectorShardConfig(dim=DIM)
    for version in versions:
        ids = np.arange(1, version + 1, dtype=np.int64) + shard_no * 1000
        vectors = rng.standard_normal((version, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        save_shard(
            build_shard(vectors, ids, config),
            shard_path(root, tenant_id, "vector", shard_no, version),
        )
        tokens = [[f"term{i}", "common"] for i in ids.tolist()]
        save_bm25_shard(
            build_bm25_shard(ids, tokens), shard_path(root, tenant_id, "bm25", shard_no, version)
        )


def _versions_on_disk(root: Path, tenant_id: int) -> set[tuple[str, int, int]]:
    found = set()
    for path in tenant_dir(root, tenant_id).iterdir():
        if path.name.startswith(("vector-", "bm25-")):
            kind, shard_no, rest = path.name.split("-", 2)
            found.add((kind, int(shard_no), int(rest[1:].split(".", 1)[0])))
    return found


async def test_compaction_keeps_the_current_and_previous_versions(
    runtime: Runtime, settings: Settings
) -> None:
    root = settings.index_dir
    # (tenant slug, shard_no): its current version, the versions on disk (older ones left
    # by crashes), and the versions compaction must keep
    layout = {
        ("a", 0): (4, [1, 2, 3, 4], {3, 4}),
        ("a", 1): (2, [1, 2], {1, 2}),
        ("b", 0): (5, [1, 4, 5], {4, 5}),
    }
    tenants: dict[str, int] = {}
    async with runtime.database.sessionmaker() as session, session.begin():
        for slug in ("a", "b"):
            tenant = Tenant(slug=slug, name=slug.upper())
            session.add(tenant)
            await session.flush()
            tenants[slug] = tenant.id
        for (slug, shard_no), (current, _, _) in layout.items():
            for kind in ("vector", "bm25"):
                session.add(
                    IndexShard(
                        tenant_id=tenants[slug],
                        kind=kind,
                        shard_no=shard_no,
                        version=current,
                        size=current,
                    )
                )
    for (slug, shard_no), (_, on_disk, _) in layout.items():
        _write_versions(root, tenants[slug], shard_no, on_disk)
    lock_file = tenant_dir(root, tenants["a"]) / ".writer.lock"
    lock_file.touch()

    deleted = await compact_shards(runtime.database, root)

    for slug, tenant_id in tenants.items():
        expected = {
            (kind, shard_no, version)
            for (s, shard_no), (_, _, keep) in layout.items()
            if s == slug
            for version in keep
            for kind in ("vector", "bm25")
        }
        assert _versions_on_disk(root, tenant_id) == expected, slug
    # a: shard 0 v1, v2; b: shard 0 v1 — each a vector and a BM25 file.
    assert deleted == 6
    assert lock_file.exists()
    # A second run finds nothing more to do.
    assert await compact_shards(runtime.database, root) == 0
