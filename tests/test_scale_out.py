"""Issue 14 §5, scaled out for real: two `cairn serve` processes and two Celery `cairn worker`
processes on one PostgreSQL database, one Redis broker and one data folder. Documents uploaded
through both APIs at once, while both are searched, all become ready and searchable through
both within the shard-version poll interval, with exactly the chunks their text yields, each
stored once and indexed once; then one worker is SIGKILLed in the middle of a second batch and
still nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import func, select

from app.bench.processes import (
    ApiProcess,
    Deployment,
    kill,
    start_api,
    start_worker,
    stop,
    wait_healthy,
)
from app.kit.settings import ChunkingConfig, Settings
from app.models import Chunk, Document, IndexShard, Job
from app.search.index import index_ids, load_bm25_shard, load_shard
from app.search.index.layout import shard_path
from ingest.chunking import chunk_document
from ingest.parsers import parse
from tests.conftest import (
    ADMIN_PASSWORD,
    REDIS_URL,
    TEST_AUDIT_SECRET,
    TEST_SECRET,
    Api,
    DatabaseFactory,
    make_settings,
    require_service,
)
from tests.helpers import key_of
from tests.ingest.worker_process import WORKER_ENV, poll, upload_app

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

SLUG = "ops"
# Small enough that a document's new shard version reaches the other API process quickly.
VERSION_POLL_SECONDS = 0.5
ENV = {
    **WORKER_ENV,
    "CAIRN_SEARCH__VERSION_POLL_SECONDS": str(VERSION_POLL_SECONDS),
    "CAIRN_ARGON2_TIME_COST": "1",
    "CAIRN_ARGON2_MEMORY_KIB": "1024",
    # This test counts documents, not requests: the per-caller quotas stay out of its way.
    "CAIRN_QUOTAS__ENABLED": "false",
    "CAIRN_LOG_LEVEL": "INFO",
}
# A Redis database of its own (flushed here): other tests flush theirs. README "Development".
BROKER = os.environ.get("CAIRN_TEST_REDIS_BROKER_URL", REDIS_URL.rsplit("/", 1)[0] + "/12")


def marker(n: int) -> str:
    """A made-up word that only document `n` contains (letters only: one BM25 token)."""
    letters = "".join(chr(ord("a") + (n // 26**k) % 26) for k in range(3))
    return f"zorbix{letters}"


def short_document(n: int) -> bytes:
    return (
        f"# Inspection {n}\n\nThe {marker(n)} valve of pump station {n} was inspected; "
        f"the seals were replaced and the pressure held at {1000 + n} kilopascal.\n"
    ).encode()


def long_document(n: int) -> bytes:
    """Many chunks at the test's chunk size: its worker spends seconds embedding it."""
    paragraphs = [
        f"Paragraph {p} of survey {n}: the {marker(n)} pipeline segment {p * 7} showed "
        f"{p % 13} corroded valves, {p % 5} cracked welds and {1000 + p} kilopascal."
        for p in range(12)
    ]
    return ("\n\n".join(paragraphs) + "\n").encode()


def expected_chunks(name: str, data: bytes, chunking: ChunkingConfig, settings: Settings) -> int:
    """How many chunks the pipeline must store for this document: parsed and chunked here,
    with the workers' settings."""
    return len(chunk_document(parse(data, name, settings.parse_limits), chunking))


@pytest.fixture
async def postgres_url(postgres_factory: DatabaseFactory) -> AsyncIterator[str]:
    url = await postgres_factory.new()
    yield url
    await postgres_factory.drop(url)


@pytest.fixture
def broker() -> str:
    require_service("Redis", REDIS_URL, 6379)
    redis.Redis.from_url(BROKER).flushdb()
    return BROKER


class Cluster:
    def __init__(self, root: Path, database_url: str, broker_url: str) -> None:
        self.root = root
        self.deployment = Deployment(
            data_dir=root / "data",
            jwt_secret=TEST_SECRET,
            audit_secret=TEST_AUDIT_SECRET,
            admin_password=ADMIN_PASSWORD,
            database_url=database_url,
            broker_url=broker_url,
            redis_url=broker_url,
        )
        self.env = self.deployment.env(**ENV)
        self.apis: list[ApiProcess] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        # Both at once, as a deployment's replicas start: first-start work (the admin
        # account) must not trip over the other process.
        self.apis = [start_api(self.env, self.root / f"api-{n}.log") for n in (1, 2)]
        self.workers = [self.spawn_worker(n) for n in (1, 2)]
        for api in self.apis:
            wait_healthy(api)

    def spawn_worker(self, n: int) -> subprocess.Popen[bytes]:
        return start_worker(self.env, self.root / f"worker-{n}.log")

    def alive(self) -> None:
        for api in self.apis:
            api.alive()
        for worker in self.workers:
            if worker.poll() is not None:
                raise AssertionError(f"a worker died:\n{self.logs()}")

    def stop(self) -> None:
        for process in [*self.workers, *(api.process for api in self.apis)]:
            stop(process)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}"
            for path in sorted(self.root.glob("*.log"))
        )


async def upload(
    clients: list[httpx.AsyncClient], headers: dict[str, str], docs: dict[str, bytes]
) -> dict[str, str]:
    """Upload through the API processes in turn, four at a time; public id per name."""
    names = list(docs)
    ids: dict[str, str] = {}
    counter = iter(range(len(names)))

    async def uploader() -> None:
        for i in counter:
            response = await clients[i % len(clients)].post(
                f"/api/v1/tenants/{SLUG}/documents",
                files={"file": (names[i], docs[names[i]])},
                headers=headers,
            )
            assert response.status_code == 202, response.text
            ids[names[i]] = str(response.json()["id"])

    await asyncio.gather(*(uploader() for _ in range(4)))
    return ids


async def search(client: httpx.AsyncClient, headers: dict[str, str], query: str) -> list[str]:
    response = await client.post(
        f"/api/v1/tenants/{SLUG}/search",
        json={"query": query, "mode": "bm25", "top_k": 5},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return [hit["document_id"] for hit in response.json()["hits"]]


def keep_searching(
    clients: list[httpx.AsyncClient], headers: dict[str, str], stop_flag: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, int]]:
    """Search both APIs over and over until `stop_flag`; how many searches answered 200."""

    async def run() -> int:
        done = 0
        while not stop_flag.is_set():
            for client in clients:
                await search(client, headers, f"{marker(done % 50)} valve")
                done += 1
            await asyncio.sleep(0.05)
        return done

    return run


async def all_ready(app: FastAPI, cluster: Cluster, count: int) -> bool:
    """Every document ready, every chunk in a shard, no job left running or queued."""
    cluster.alive()
    async with app.state.database.read_sessionmaker() as session:
        statuses = Counter(await session.scalars(select(Document.status)))
        pending = await session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.shard_no.is_(None))
        )
        open_jobs = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == "ingest", Job.status.in_(("queued", "running")))
        )
    assert statuses["failed"] == 0, (statuses, cluster.logs())
    return statuses["ready"] == count and pending == 0 and open_jobs == 0


async def assert_exactly_once(app: FastAPI, expected: dict[int, int]) -> None:
    """Each document holds exactly its expected chunks, once each; the tenant's shards hold
    exactly the tenant's chunk ids, once each (vector and BM25 alike)."""
    async with app.state.database.read_sessionmaker() as session:
        rows = (await session.execute(select(Chunk.id, Chunk.document_id, Chunk.position))).all()
        documents = {d.id: d for d in await session.scalars(select(Document))}
        shards = list(await session.scalars(select(IndexShard)))
    per_document = Counter(document_id for _, document_id, _ in rows)
    assert dict(per_document) == expected
    assert {d: documents[d].chunk_count for d in expected} == expected
    positions = Counter((document_id, position) for _, document_id, position in rows)
    assert max(positions.values()) == 1, "a chunk stored twice"
    chunk_ids = sorted(chunk_id for chunk_id, _, _ in rows)
    root = app.state.settings.index_dir
    vector_ids: list[int] = []
    bm25_ids: list[int] = []
    for s in shards:
        path = shard_path(root, s.tenant_id, s.kind, s.shard_no, s.version)
        if s.kind == "vector":
            vector_ids += index_ids(load_shard(path)).tolist()
        else:
            bm25_ids += load_bm25_shard(path).ids.tolist()
    assert sorted(vector_ids) == chunk_ids
    assert sorted(bm25_ids) == chunk_ids


async def searchable_everywhere(
    clients: list[httpx.AsyncClient], headers: dict[str, str], ids: dict[int, str]
) -> None:
    """Each document is the top hit for its marker word through every API process, within
    a few shard-version poll intervals of being indexed."""

    async def found() -> bool:
        for n, public_id in ids.items():
            for client in clients:
                hits = await search(client, headers, marker(n))
                if not hits or hits[0] != public_id:
                    return False
        return True

    await poll(found, timeout=VERSION_POLL_SECONDS * 4 + 5, every=VERSION_POLL_SECONDS)


async def test_two_apis_two_celery_workers_lose_nothing(
    postgres_url: str, broker: str, tmp_path: Path
) -> None:
    settings = make_settings(postgres_url, tmp_path / "data", broker_url=broker)
    chunking = settings.chunking.model_copy(
        update={
            "max_tokens": int(WORKER_ENV["CAIRN_CHUNKING__MAX_TOKENS"]),
            "overlap_tokens": int(WORKER_ENV["CAIRN_CHUNKING__OVERLAP_TOKENS"]),
        }
    )
    cluster = Cluster(tmp_path, postgres_url, broker)
    try:
        cluster.start()
        async with (
            upload_app(settings) as (app, _),
            httpx.AsyncClient(base_url=cluster.apis[0].url, timeout=60) as first,
            httpx.AsyncClient(base_url=cluster.apis[1].url, timeout=60) as second,
        ):
            clients = [first, second]
            api = Api(first)
            await api.tenant(SLUG)
            headers = await api.user("loader", ops="editor")

            # Batch 1: 50 documents through both APIs at once, while both are searched.
            batch1 = {f"inspection-{n}.md": short_document(n) for n in range(50)}
            stop_flag = asyncio.Event()
            searcher = asyncio.create_task(keep_searching(clients, headers, stop_flag)())
            public = await upload(clients, headers, batch1)
            await poll(lambda: all_ready(app, cluster, 50), timeout=300, every=0.5)
            stop_flag.set()
            assert await searcher > 0

            expected = {
                key_of(public[name]): expected_chunks(name, data, chunking, settings)
                for name, data in batch1.items()
            }
            await assert_exactly_once(app, expected)
            await searchable_everywhere(
                clients, headers, {n: public[f"inspection-{n}.md"] for n in range(50)}
            )
            # Both workers took part (each job records the process that ran it).
            runners = await job_runners(app)
            assert len({r.split(":")[1] for r in runners}) >= 2, runners

            # Batch 2: long documents; one worker is SIGKILLed while it embeds one.
            batch2 = {f"survey-{n}.md": long_document(n) for n in range(50, 62)}
            public2 = await upload(clients, headers, batch2)
            victim = await poll_value(lambda: worker_mid_embedding(app, cluster), timeout=180)
            kill(cluster.workers[victim])
            # No replacement: the surviving worker's sweeper re-sends the orphaned job once its
            # lease expires, and that worker finishes it and the rest of the batch.
            cluster.workers.pop(victim)
            await poll(lambda: all_ready(app, cluster, 62), timeout=400, every=0.5)

            for name, data in batch2.items():
                expected[key_of(public2[name])] = expected_chunks(name, data, chunking, settings)
            await assert_exactly_once(app, expected)
            await searchable_everywhere(
                clients, headers, {n: public2[f"survey-{n}.md"] for n in range(50, 62)}
            )
            # The killed worker's document was finished by another process, on a new attempt.
            assert await retried_jobs(app) >= 1
    except BaseException:
        print(cluster.logs())  # noqa: T201 - shown by pytest when the test fails
        raise
    finally:
        cluster.stop()


async def retried_jobs(app: FastAPI) -> int:
    async with app.state.database.read_sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Job).where(Job.kind == "ingest", Job.attempts > 1)
        )
    return int(count or 0)


async def job_runners(app: FastAPI) -> list[str]:
    async with app.state.database.read_sessionmaker() as session:
        return [r for r in await session.scalars(select(Job.locked_by)) if r]


async def worker_mid_embedding(app: FastAPI, cluster: Cluster) -> int | None:
    """The index of a worker process (its process group) that is embedding a document now."""
    cluster.alive()
    async with app.state.database.read_sessionmaker() as session:
        busy = (
            await session.execute(
                select(Job.locked_by, Document.progress)
                .join(Document, Document.id == Job.document_id)
                .where(Job.status == "running", Document.status == "processing")
            )
        ).all()
    for locked_by, progress in busy:
        if locked_by and 0.05 < progress < 0.8:
            pid = int(locked_by.rsplit(":", 1)[1])
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            for n, worker in enumerate(cluster.workers):
                if worker.pid == group:
                    return n
    return None


async def poll_value(check: Callable[[], Awaitable[int | None]], *, timeout: float) -> int:
    result: list[int] = []

    async def found() -> bool:
        value = await check()
        if value is not None:
            result.append(value)
        return value is not None

    await poll(found, timeout=timeout, every=0.1)
    return result[0]
