"""`cairn bench serve`: the API under load, as deployed — real `cairn serve` processes.

Three measurements, each on a fresh deployment in a scratch folder, with documents taken from
the SciFact corpus and uploaded through the API:

* search throughput: requests/s and p50/p95 of hybrid searches at concurrency 8 and 32, on
  the embedded default (SQLite, one process, in-process workers) and on PostgreSQL + Redis
  with one and with two API processes (the clients spread over them; one Celery `cairn
  worker` ingested the documents);
* chat answers/s with the answer cache cold (questions not asked before) and warm (the same
  questions again), on the embedded default;
* interactive work under bulk ingestion (issue 14 §6): search and chat p50/p95 on the
  embedded default while a bulk upload is being ingested, against idle, once with the
  ingestion threads at the process's priority (`worker.ingest_nice = 0`) and once at the
  configured one.

The client runs in this process, on the same cores: absolute figures include its share.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from app.bench.ingest import DEFAULT_CORPUS
from app.bench.processes import (
    ApiProcess,
    Deployment,
    start_api,
    start_worker,
    stop,
    wait_healthy,
)
from app.bench.report import section, write_section
from app.bench.search import Latency, Throughput
from app.kit.migrate import upgrade

SLUG = "bench"
SEARCH = f"/api/v1/tenants/{SLUG}/search"
CHAT = f"/api/v1/tenants/{SLUG}/chat"
DOCUMENTS = f"/api/v1/tenants/{SLUG}/documents"
QUERIES = [
    "cerebral white matter development in newborns",
    "vitamin D deficiency and bone fractures",
    "antibiotic resistance in hospital infections",
    "gene expression in breast cancer cells",
    "insulin signalling and obesity",
    "immune response to viral infection",
    "effects of exercise on the heart",
    "DNA repair and ageing",
]
QUESTIONS = [
    "How does white matter develop in newborn brains?",
    "Does vitamin D protect against fractures?",
    "What drives antibiotic resistance?",
    "Which genes are expressed in breast cancer?",
    "How is insulin signalling linked to obesity?",
    "How does the immune system respond to a virus?",
    "What does exercise do to the heart?",
    "How is DNA repair related to ageing?",
]


# --------------------------------------------------------------------------- documents


def corpus_documents(corpus: Path, count: int, *, skip: int = 0, chars: int = 0) -> list[bytes]:
    """`count` Markdown documents from a BEIR corpus.jsonl (title as heading); `chars` > 0
    cuts each text to about that many characters (one chunk each)."""
    out: list[bytes] = []
    with corpus.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle):
            if n < skip:
                continue
            if len(out) == count:
                break
            record = json.loads(line)
            text = str(record["text"])
            if chars:
                text = text[:chars]
            out.append(f"# {record['title']}\n\n{text}\n".encode())
    if len(out) < count:
        raise ValueError(f"{corpus} has fewer than {skip + count} documents")
    return out


# --------------------------------------------------------------------------- client side


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def set_up_tenant(client: httpx.AsyncClient, admin_password: str) -> dict[str, str]:
    """The bench tenant and an editor in it (who uploads, searches and asks); its headers."""
    admin = await sign_in(client, "admin", admin_password)
    response = await client.post(
        "/api/v1/tenants", json={"slug": SLUG, "name": "Bench"}, headers=admin
    )
    response.raise_for_status()
    password = secrets.token_urlsafe(16)
    response = await client.post(
        "/api/v1/users", json={"username": "bench-editor", "password": password}, headers=admin
    )
    response.raise_for_status()
    response = await client.put(
        f"/api/v1/tenants/{SLUG}/members/bench-editor", json={"role": "editor"}, headers=admin
    )
    response.raise_for_status()
    return await sign_in(client, "bench-editor", password)


async def upload_all(
    clients: list[httpx.AsyncClient],
    headers: dict[str, str],
    documents: list[bytes],
    *,
    prefix: str,
    concurrency: int = 4,
) -> list[str]:
    """Upload through the clients in turn; the documents' public ids."""
    ids: list[str] = [""] * len(documents)
    counter = iter(range(len(documents)))

    async def one_client() -> None:
        for i in counter:
            response = await clients[i % len(clients)].post(
                DOCUMENTS, files={"file": (f"{prefix}-{i}.md", documents[i])}, headers=headers
            )
            response.raise_for_status()
            ids[i] = str(response.json()["id"])

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return ids


async def count_ready(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, int]:
    """(ready, failed) documents of the bench tenant."""
    counts = []
    for status in ("ready", "failed"):
        response = await client.get(
            DOCUMENTS, params={"status": status, "limit": 1}, headers=headers
        )
        response.raise_for_status()
        counts.append(int(response.json()["total"]))
    return counts[0], counts[1]


async def wait_ready(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    expected: int,
    *,
    timeout: float,
    alive: Callable[[], None] = lambda: None,
) -> None:
    started = time.monotonic()
    while True:
        alive()
        if await all_ready(client, headers, expected, since=started, timeout=timeout):
            return
        await asyncio.sleep(1.0)


async def all_ready(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    expected: int,
    *,
    since: float,
    timeout: float,
) -> bool:
    """Whether `expected` documents are ready; RuntimeError when one failed, or when waiting
    since `since` (time.monotonic) has taken longer than `timeout` seconds."""
    ready, failed = await count_ready(client, headers)
    if failed:
        raise RuntimeError(f"{failed} documents failed to ingest")
    if ready >= expected:
        return True
    if time.monotonic() - since > timeout:
        raise RuntimeError(f"only {ready}/{expected} documents ready after {timeout}s")
    return False


async def timed(
    send: Callable[[int], Awaitable[httpx.Response]],
    requests: int,
    concurrency: int,
    *,
    samples: list[float] | None = None,
) -> Throughput:
    """`requests` calls of `send(i)` from `concurrency` clients, each one call at a time (each
    call's seconds also appended to `samples`)."""
    seconds: list[float] = [] if samples is None else samples
    first = len(seconds)
    errors = 0
    counter = iter(range(requests))

    async def one_client() -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            try:
                response = await send(i)
                failed = response.status_code != 200
            except httpx.TransportError:
                # A dropped connection is a failed request, reported, not the end of the run.
                failed = True
            seconds.append(time.perf_counter() - started)
            errors += failed

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Throughput(requests, elapsed, Latency.of(seconds[first:]), errors)


def searcher(
    clients: list[httpx.AsyncClient], headers: dict[str, str]
) -> Callable[[int], Awaitable[httpx.Response]]:
    """Hybrid searches spread over the clients (one per API process) in turn."""

    def send(i: int) -> Awaitable[httpx.Response]:
        body = {"query": QUERIES[i % len(QUERIES)], "mode": "hybrid", "top_k": 10}
        return clients[i % len(clients)].post(SEARCH, json=body, headers=headers)

    return send


def asker(
    client: httpx.AsyncClient, headers: dict[str, str], questions: list[str]
) -> Callable[[int], Awaitable[httpx.Response]]:
    def send(i: int) -> Awaitable[httpx.Response]:
        return client.post(CHAT, json={"question": questions[i % len(questions)]}, headers=headers)

    return send


@asynccontextmanager
async def clients_for(
    apis: list[ApiProcess], concurrency: int
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One HTTP client per API process."""
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=api.url, timeout=300, limits=limits)
            )
            for api in apis
        ]


# --------------------------------------------------------------------------- results


@dataclass
class ServeBenchResult:
    documents: int
    search_requests: int
    # (deployment, concurrency) -> throughput
    search: dict[tuple[str, int], Throughput] = field(default_factory=dict)
    # "cold" / "warm" -> throughput; empty when the answer cache is not there
    chat_cache: dict[str, Throughput] = field(default_factory=dict)
    chat_cache_note: str = ""
    # (ingest_nice, "idle"/"ingesting", "search"/"chat") -> latency
    interactive: dict[tuple[int, str, str], Latency] = field(default_factory=dict)
    # ingest_nice -> (searches, chats, seconds) measured while the bulk ingested
    busy_counts: dict[int, tuple[int, int, float]] = field(default_factory=dict)
    bulk_documents: int = 0
    max_new_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts: list[str] = []
        if self.search:
            rows = ["| deployment | concurrency | requests/s | p50 ms | p95 ms | errors |"]
            rows.append("|---|---:|---:|---:|---:|---:|")
            for (name, concurrency), t in self.search.items():
                rows.append(
                    f"| {name} | {concurrency} | {t.per_second:.1f} | {t.latency.p50:.0f} | "
                    f"{t.latency.p95:.0f} | {t.errors} |"
                )
            parts.append(
                f"### Search throughput\n\n{self.documents} documents (one chunk each), hybrid "
                f"mode, top 10, {self.search_requests} requests per row, after a warm-up; "
                "the clients take the API processes in turn.\n\n" + "\n".join(rows)
            )
        chat = "### Chat answers/s, answer cache cold and warm\n\n"
        if self.chat_cache:
            rows = ["| answer cache | answers | answers/s | p50 ms | p95 ms | errors |"]
            rows.append("|---|---:|---:|---:|---:|---:|")
            for name, t in self.chat_cache.items():
                rows.append(
                    f"| {name} | {t.requests} | {t.per_second:.2f} | {t.latency.p50:.0f} | "
                    f"{t.latency.p95:.0f} | {t.errors} |"
                )
            chat += "\n".join(rows)
        else:
            chat += self.chat_cache_note or "Not measured."
        parts.append(chat)
        if self.interactive:
            parts.append(self._interactive_markdown())
        if self.notes:
            parts.append("\n".join(f"- {n}" for n in self.notes))
        return "\n\n".join(parts)

    def _interactive_markdown(self) -> str:
        rows = [
            "| ingest_nice | request | idle before p50 / p95 ms | under ingestion p50 / p95 ms"
            " | idle after p50 / p95 ms | p95 ratio (÷ after) | ÷ before | target ≤ 1.5× |"
        ]
        rows.append("|---:|---|---|---|---|---:|---:|---|")
        for nice in sorted({k[0] for k in self.interactive}):
            for kind in ("search", "chat"):
                before = self.interactive.get((nice, "idle", kind))
                busy = self.interactive.get((nice, "ingesting", kind))
                after = self.interactive.get((nice, "idle after", kind))
                if before is None or busy is None:
                    continue
                # Against the idle server at the end: its index is at least as large as any
                # the searches under ingestion ran on (the issue's own comparison).
                baseline = after or before
                ratio = busy.p95 / baseline.p95
                after_cell = f"{after.p50:.0f} / {after.p95:.0f}" if after else "—"
                rows.append(
                    f"| {nice} | {kind} | {before.p50:.0f} / {before.p95:.0f} | "
                    f"{busy.p50:.0f} / {busy.p95:.0f} | {after_cell} | {ratio:.2f}× | "
                    f"{busy.p95 / before.p95:.2f}× | {'met' if ratio <= 1.5 else 'missed'} |"
                )
        counts = "; ".join(
            f"nice {k}: {n} searches and {c} chats over {t:.0f} s"
            for k, (n, c, t) in sorted(self.busy_counts.items())
        )
        return (
            "### Search and chat while a bulk ingestion runs (embedded default)\n\n"
            f"One `cairn serve` on SQLite with its in-process workers and {self.documents} "
            f"short documents; {self.bulk_documents} abstracts uploaded (4 clients), then, "
            "until every one of them is ready, rounds of searches (hybrid, top 10, "
            "concurrency 2, 4 per second on average) and a chat question every 30 s (the "
            f"bundled generator, max_new_tokens {self.max_new_tokens}, answer cache off): "
            f"{counts}. Idle before: "
            "the same before the bulk; idle after: once every document is ready (the full "
            "index).\n\n" + "\n".join(rows)
        )


# --------------------------------------------------------------------------- the run


def new_deployment(root: Path, **urls: str | None) -> Deployment:
    root.mkdir(parents=True, exist_ok=True)
    return Deployment(
        data_dir=root / "data",
        jwt_secret=secrets.token_urlsafe(48),
        audit_secret=secrets.token_urlsafe(48),
        admin_password=secrets.token_urlsafe(16),
        **urls,
    )


# Cheap password hashing: the bench signs in a handful of times. No per-caller quotas: they
# would cap the very throughput being measured (their own cost is one counter per request).
BASE_ENV = {
    "CAIRN_ARGON2_TIME_COST": "1",
    "CAIRN_ARGON2_MEMORY_KIB": "1024",
    "CAIRN_QUOTAS__ENABLED": "false",
}


async def _search_rows(
    result: ServeBenchResult,
    name: str,
    apis: list[ApiProcess],
    headers: dict[str, str],
    concurrencies: list[int],
) -> None:
    async with clients_for(apis, max(concurrencies)) as clients:
        send = searcher(clients, headers)
        await timed(send, 2 * len(QUERIES), 2)  # warm-up: shards, embedder, connections
        for concurrency in concurrencies:
            result.search[(name, concurrency)] = await timed(
                send, result.search_requests, concurrency
            )
            for api in apis:
                api.alive()  # errors from a crashed server are not a measurement


async def _embedded_search(
    result: ServeBenchResult, root: Path, documents: list[bytes], concurrencies: list[int]
) -> None:
    deployment = new_deployment(root)
    api = start_api(deployment.env(**BASE_ENV), root / "serve.log")
    try:
        wait_healthy(api)
        async with httpx.AsyncClient(base_url=api.url, timeout=300) as client:
            headers = await set_up_tenant(client, deployment.admin_password)
            await upload_all([client], headers, documents, prefix="doc")
            await wait_ready(client, headers, len(documents), timeout=1800, alive=api.alive)
        await _search_rows(result, "embedded SQLite, 1 process", [api], headers, concurrencies)
    finally:
        stop(api.process)


async def _scaled_search(
    result: ServeBenchResult,
    root: Path,
    documents: list[bytes],
    concurrencies: list[int],
    database_url: str,
    redis_url: str,
) -> None:
    deployment = new_deployment(
        root, database_url=database_url, broker_url=redis_url, redis_url=redis_url
    )
    await asyncio.to_thread(upgrade, database_url)
    env = deployment.env(**BASE_ENV)
    apis = [start_api(env, root / f"serve-{n}.log") for n in (1, 2)]
    worker = start_worker(env, root / "worker.log")
    try:
        for api in apis:
            wait_healthy(api)
        async with httpx.AsyncClient(base_url=apis[0].url, timeout=300) as client:
            headers = await set_up_tenant(client, deployment.admin_password)
            await upload_all([client], headers, documents, prefix="doc")

            def alive() -> None:
                if worker.poll() is not None:
                    raise RuntimeError((root / "worker.log").read_text()[-4000:])

            await wait_ready(client, headers, len(documents), timeout=1800, alive=alive)
        stop(worker)  # idle from here on; measure the API processes alone
        await _search_rows(
            result, "PostgreSQL + Redis, 1 API process", apis[:1], headers, concurrencies
        )
        await _search_rows(
            result, "PostgreSQL + Redis, 2 API processes", apis, headers, concurrencies
        )
    finally:
        stop(worker)
        for api in apis:
            stop(api.process)


async def _chat_cache(
    result: ServeBenchResult, root: Path, documents: list[bytes], answers: int, max_new_tokens: int
) -> None:
    deployment = new_deployment(root)
    env = deployment.env(
        **BASE_ENV,
        CAIRN_GENERATOR__MAX_NEW_TOKENS=str(max_new_tokens),
        CAIRN_CHAT__MIN_SIMILARITY="0",
    )
    api = start_api(env, root / "serve.log", preload=True)
    try:
        wait_healthy(api, timeout=600)
        async with httpx.AsyncClient(base_url=api.url, timeout=600) as client:
            headers = await set_up_tenant(client, deployment.admin_password)
            await upload_all([client], headers, documents, prefix="doc")
            await wait_ready(client, headers, len(documents), timeout=1800, alive=api.alive)
            questions = QUESTIONS[:answers]
            send = asker(client, headers, questions)
            result.chat_cache["cold"] = await timed(send, len(questions), 1)
            result.chat_cache["warm"] = await timed(send, len(questions), 1)
    finally:
        stop(api.process)


async def _interactive(
    result: ServeBenchResult,
    root: Path,
    seed: list[bytes],
    bulk: list[bytes],
    nice: int,
    searches: int,
    chats: int,
    max_new_tokens: int,
) -> None:
    deployment = new_deployment(root)
    env = deployment.env(
        **BASE_ENV,
        CAIRN_WORKER__INGEST_NICE=str(nice),
        CAIRN_GENERATOR__MAX_NEW_TOKENS=str(max_new_tokens),
        CAIRN_CHAT__MIN_SIMILARITY="0",
        # Every question reaches the generator: the cache would hide the generation time.
        CAIRN_CACHE__ANSWERS="false",
    )
    api = start_api(env, root / "serve.log", preload=True)
    try:
        wait_healthy(api, timeout=600)
        async with httpx.AsyncClient(base_url=api.url, timeout=600) as client:
            headers = await set_up_tenant(client, deployment.admin_password)
            await upload_all([client], headers, seed, prefix="seed")
            await wait_ready(client, headers, len(seed), timeout=1800, alive=api.alive)
            search = searcher([client], headers)
            ask = asker(client, headers, QUESTIONS)
            await timed(search, len(QUERIES), 2)
            await timed(ask, 1, 1)
            idle_search = await timed(search, searches, 2)
            idle_chat = await timed(ask, chats, 1)
            await upload_all([client], headers, bulk, prefix="bulk")
            busy = await _while_ingesting(
                client, headers, search, ask, searches, len(seed) + len(bulk), alive=api.alive
            )
            result.interactive[(nice, "idle", "search")] = idle_search.latency
            result.interactive[(nice, "idle", "chat")] = idle_chat.latency
            result.interactive[(nice, "ingesting", "search")] = Latency.of(busy.searches)
            result.interactive[(nice, "ingesting", "chat")] = Latency.of(busy.chats)
            result.busy_counts[nice] = (len(busy.searches), len(busy.chats), busy.seconds)
            await wait_ready(client, headers, len(seed) + len(bulk), timeout=3600, alive=api.alive)
            # Once the shards stop changing the API process reloads them one last time.
            await timed(search, len(QUERIES), 2)
            after_search = await timed(search, searches, 2)
            after_chat = await timed(ask, chats, 1)
            result.interactive[(nice, "idle after", "search")] = after_search.latency
            result.interactive[(nice, "idle after", "chat")] = after_chat.latency
    finally:
        stop(api.process)


@dataclass
class _Busy:
    searches: list[float] = field(default_factory=list)
    chats: list[float] = field(default_factory=list)
    seconds: float = 0.0


async def _while_ingesting(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    search: Callable[[int], Awaitable[httpx.Response]],
    ask: Callable[[int], Awaitable[httpx.Response]],
    searches: int,
    expected: int,
    *,
    alive: Callable[[], None],
    rate: float = 4.0,
    chat_every: float = 30.0,
    timeout: float = 3600.0,
) -> _Busy:
    """Searches in rounds, `rate` per second on average (people at work, not a load test that
    would leave the lower-priority ingestion no cycles at all), and a chat question every
    `chat_every` seconds, from the end of the upload until every document is ready: the whole
    import, not only its first seconds (the shards a worker rewrites, and the API reloads,
    grow as it goes)."""
    busy = _Busy()
    started = time.monotonic()
    last_chat = -chat_every
    while True:
        alive()
        round_started = time.monotonic()
        await timed(search, searches, 2, samples=busy.searches)
        await asyncio.sleep(max(0.0, searches / rate - (time.monotonic() - round_started)))
        if time.monotonic() - last_chat >= chat_every:
            last_chat = time.monotonic()
            await timed(ask, 1, 1, samples=busy.chats)
        if await all_ready(client, headers, expected, since=started, timeout=timeout):
            break
    busy.seconds = time.monotonic() - started
    return busy


async def _pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg

    url = make_url(admin_url)
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def postgres_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh database beside `admin_url`'s, and a function that drops it."""
    name = f"cairn_bench_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(admin_url, f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        asyncio.run(_pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    url = make_url(admin_url).set(database=name)
    return url.render_as_string(hide_password=False), drop


def answer_cache_present() -> bool:
    """Whether this tree has the chat-answer cache (issue 14 §3), built alongside this bench."""
    import importlib.util

    return any(
        importlib.util.find_spec(name) is not None for name in ("app.cache", "app.kit.cache")
    )


def bench_serve(
    *,
    documents: int,
    search_requests: int,
    concurrencies: list[int],
    postgres_url: str | None,
    redis_url: str | None,
    chat_answers: int,
    bulk_documents: int,
    interactive_searches: int,
    interactive_chats: int,
    max_new_tokens: int,
    nices: list[int],
    corpus: Path = DEFAULT_CORPUS,
    models_dir: Path,
    output: Path,
    command: str,
) -> ServeBenchResult:
    result = ServeBenchResult(documents=documents, search_requests=search_requests)
    # The bundled generator is converted once into the caller's model cache, not once per
    # scratch deployment.
    BASE_ENV["CAIRN_MODEL_CACHE_DIR"] = str(models_dir.resolve())
    result.bulk_documents = bulk_documents
    result.max_new_tokens = max_new_tokens
    short = corpus_documents(corpus, documents, chars=600)
    root = Path(tempfile.mkdtemp(prefix="cairn-bench-serve-"))
    try:
        if search_requests:
            asyncio.run(_embedded_search(result, root / "embedded", short, concurrencies))
            if postgres_url and redis_url:
                url, drop = postgres_database(postgres_url)
                try:
                    asyncio.run(
                        _scaled_search(
                            result, root / "scaled", short, concurrencies, url, redis_url
                        )
                    )
                finally:
                    drop()
            else:
                result.notes.append(
                    "PostgreSQL + Redis rows skipped: no --postgres-url/--redis-url"
                )
        if chat_answers:
            if answer_cache_present():
                asyncio.run(_chat_cache(result, root / "chat", short, chat_answers, max_new_tokens))
            else:
                result.chat_cache_note = (
                    "Not measured: the chat-answer cache (issue 14 §3) was not in this tree "
                    "when the benchmark ran."
                )
        if bulk_documents:
            bulk = corpus_documents(corpus, bulk_documents, skip=documents)
            for nice in nices:
                asyncio.run(
                    _interactive(
                        result,
                        root / f"interactive-{nice}",
                        short,
                        bulk,
                        nice,
                        interactive_searches,
                        interactive_chats,
                        max_new_tokens,
                    )
                )
    except BaseException:
        # Keep the processes' logs for the post-mortem.
        print(f"bench failed; process logs kept in {root}", file=sys.stderr)  # noqa: T201
        raise
    shutil.rmtree(root, ignore_errors=True)
    write_section(output, "serve", section("Serving under load", command, result.markdown()))
    return result
