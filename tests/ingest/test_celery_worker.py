"""The scaled-out path: the API hands jobs to Celery on a real Redis, and real `cairn worker`
processes run them — including after one of them is SIGKILLed mid-job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from app.kit.settings import Settings
from tests.conftest import REDIS_URL, Api, require_service
from tests.helpers import key_of
from tests.ingest.worker_process import (
    assert_indexed_exactly_once,
    document_state,
    kill_group,
    long_text,
    poll,
    settle_with_new_worker,
    spawn_worker,
    stop,
    upload_app,
    worker_env,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def broker_url() -> str:
    require_service("Redis", REDIS_URL, 6379)
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


async def test_celery_workers_on_redis(settings: Settings, broker_url: str, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"broker_url": broker_url})
    env = worker_env(settings, CAIRN_BROKER_URL=broker_url)
    async with upload_app(settings) as (app, client):
        api = Api(client)
        await api.tenant("ops")
        headers = await api.user("loader", ops="editor")

        first = spawn_worker(env, tmp_path / "first.log")
        try:
            small = await client.post(
                "/api/v1/tenants/ops/documents",
                files={"file": ("pumps.txt", b"The hydraulic pumps were serviced in May.")},
                headers=headers,
            )
            assert small.status_code == 202
            small_id = key_of(small.json()["id"])

            async def ready(document_id: int) -> bool:
                status, _, _ = await document_state(app, document_id)
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                return status in ("ready", "failed")

            await poll(lambda: ready(small_id), timeout=180)
            _, _, job = await document_state(app, small_id)
            assert job.status == "done"
            assert job.locked_by is not None
            assert not job.locked_by.endswith(f":{os.getpid()}")
            await assert_indexed_exactly_once(app, small_id)

            big = await client.post(
                "/api/v1/tenants/ops/documents",
                files={"file": ("inspections.txt", long_text(120))},
                headers=headers,
            )
            big_id = key_of(big.json()["id"])

            async def embedding_big() -> bool:
                status, progress, _ = await document_state(app, big_id)
                return status == "processing" and 0.05 < progress < 0.8

            await poll(embedding_big, timeout=180)
            kill_group(first)
        finally:
            stop(first)

        _, _, job = await document_state(app, big_id)
        assert (job.status, job.attempts) == ("running", 1)

        # The dead worker's message is gone with it; the new worker's sweeper finds the job
        # whose lease ran out and sends it again.
        await settle_with_new_worker(app, env, tmp_path / "second.log", big_id)
        _, _, job = await document_state(app, big_id)
        assert (job.status, job.attempts) == ("done", 2)
        await assert_indexed_exactly_once(app, big_id)
        await assert_indexed_exactly_once(app, small_id)
