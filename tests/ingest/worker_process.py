"""Real `cairn worker` processes for integration tests: an app to upload through, and the
environment a worker needs to share its database and data folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.kit.settings import Settings
from app.main import create_app
from app.models import Chunk, Document, IndexShard, Job
from app.search.index import index_ids, load_bm25_shard, load_shard
from app.search.index.layout import shard_path

REPO = Path(__file__).resolve().parents[2]

# Small chunks and batches: a document yields many quick embedding steps, so a test can
# catch the worker in the middle of one; a short lease lets the next worker take over fast.
WORKER_ENV = {
    "CAIRN_WORKER__LEASE_SECONDS": "3",
    "CAIRN_WORKER__POLL_SECONDS": "0.2",
    "CAIRN_WORKER__EMBED_BATCH": "2",
    "CAIRN_WORKER__BACKOFF_SECONDS": "0.5",
    "CAIRN_WORKER__SWEEP_SECONDS": "1",
    "CAIRN_WORKER__CONCURRENCY": "1",
    "CAIRN_CHUNKING__MAX_TOKENS": "48",
    "CAIRN_CHUNKING__OVERLAP_TOKENS": "8",
}


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a worker process that shares `settings`' database and data folder."""
    assert settings.database_url is not None
    assert settings.jwt_secret is not None
    assert settings.audit_secret is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update(
        {
            "CAIRN_ENVIRONMENT": "test",
            "CAIRN_DATABASE_URL": settings.database_url,
            "CAIRN_DATA_DIR": str(settings.data_dir),
            "CAIRN_JWT_SECRET": settings.jwt_secret,
            "CAIRN_AUDIT_SECRET": settings.audit_secret,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **WORKER_ENV,
            **extra,
        }
    )
    return env


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `cairn worker` as its own process, its output going to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group: a Celery worker's pool children die with it on killpg.
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and every process it started, as a crashed machine would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Shut a worker down (TERM, then KILL), its children included."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_group(process)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@asynccontextmanager
async def upload_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The API without its own workers: jobs wait for the worker processes under test."""
    application = create_app(
        settings.model_copy(update={"embedded_workers": False, "broker_url": settings.broker_url})
    )
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://cairn"
        ) as client,
    ):
        yield application, client


def long_text(paragraphs: int) -> bytes:
    """Distinct English paragraphs, one per chunk at the test's chunk size."""
    return "\n\n".join(
        f"Paragraph {n}: inspection {n} of pipeline segment {n * 7} found {n % 13} corroded "
        f"valves, {n % 5} cracked welds and a pressure reading of {1000 + n} kilopascal."
        for n in range(paragraphs)
    ).encode()


async def poll(check: Callable[[], object], *, timeout: float, every: float = 0.1) -> None:
    """Wait until `check()` (sync or async) returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


async def document_state(app: FastAPI, document_id: int) -> tuple[str, float, Job]:
    async with app.state.database.read_sessionmaker() as session:
        document = await session.get(Document, document_id)
        job = await session.scalar(select(Job).where(Job.document_id == document_id))
        assert document is not None
        assert job is not None
        return document.status, document.progress, job


async def settle_with_new_worker(
    app: FastAPI, env: dict[str, str], log: Path, document_id: int, *, timeout: float = 240
) -> int:
    """Start a fresh worker and wait until the document is ready or failed; the worker must
    stay alive throughout (its log is shown when it dies), and is stopped afterwards.
    Returns the worker's pid."""
    worker = spawn_worker(env, log)
    try:

        async def settled() -> bool:
            status, _, _ = await document_state(app, document_id)
            assert worker.poll() is None, log.read_text()
            return status in ("ready", "failed")

        await poll(settled, timeout=timeout)
    finally:
        stop(worker)
    return worker.pid


async def assert_indexed_exactly_once(app: FastAPI, document_id: int) -> None:
    """The document is ready, its chunks are stored once each, and each shard holds exactly
    the tenant's chunk ids — nothing lost, nothing duplicated."""
    async with app.state.database.read_sessionmaker() as session:
        document = await session.get(Document, document_id)
        assert document is not None
        assert document.status == "ready", (document.status, document.error)
        positions = list(
            await session.scalars(select(Chunk.position).where(Chunk.document_id == document_id))
        )
        assert len(positions) == document.chunk_count > 0
        assert len(set(positions)) == len(positions), "duplicate chunks"
        chunk_ids = set(
            await session.scalars(select(Chunk.id).where(Chunk.tenant_id == document.tenant_id))
        )
        pending = await session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.shard_no.is_(None))
        )
        assert pending == 0
        shards = list(
            await session.scalars(
                select(IndexShard).where(IndexShard.tenant_id == document.tenant_id)
            )
        )
    root = app.state.settings.index_dir
    vector_ids: list[int] = []
    bm25_ids: list[int] = []
    for s in shards:
        path = shard_path(root, s.tenant_id, s.kind, s.shard_no, s.version)  # type: ignore[arg-type]
        if s.kind == "vector":
            vector_ids += index_ids(load_shard(path)).tolist()
        else:
            bm25_ids += load_bm25_shard(path).ids.tolist()
    assert sorted(vector_ids) == sorted(chunk_ids)
    assert sorted(bm25_ids) == sorted(chunk_ids)
