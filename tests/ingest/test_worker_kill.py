"""A worker process killed with SIGKILL in the middle of a job loses nothing: the job's lease
runs out, another worker process takes the job again and the document ends indexed once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from app.kit.settings import Settings
from tests.conftest import Api
from tests.helpers import key_of
from tests.ingest.worker_process import (
    assert_indexed_exactly_once,
    document_state,
    long_text,
    poll,
    settle_with_new_worker,
    spawn_worker,
    stop,
    upload_app,
    worker_env,
)

pytestmark = pytest.mark.slow


async def test_sigkilled_worker_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    env = worker_env(settings)
    async with upload_app(settings) as (app, client):
        api = Api(client)
        await api.tenant("ops")
        headers = await api.user("loader", ops="editor")
        # A small document indexed first, so the killed job also has existing shards to spoil.
        first = await client.post(
            "/api/v1/tenants/ops/documents",
            files={"file": ("first.txt", b"The first document mentions hydraulic pumps.")},
            headers=headers,
        )
        big = await client.post(
            "/api/v1/tenants/ops/documents",
            files={"file": ("inspections.txt", long_text(120))},
            headers=headers,
        )
        assert first.status_code == big.status_code == 202
        first_id, big_id = key_of(first.json()["id"]), key_of(big.json()["id"])

        victim = spawn_worker(env, tmp_path / "victim.log")
        try:

            async def embedding_big() -> bool:
                status, progress, _ = await document_state(app, big_id)
                assert victim.poll() is None, (tmp_path / "victim.log").read_text()
                return status == "processing" and 0.05 < progress < 0.8

            await poll(embedding_big, timeout=180)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
        finally:
            stop(victim)

        _, progress_at_kill, job = await document_state(app, big_id)
        assert job.status == "running"
        assert job.locked_by is not None
        assert job.locked_by.endswith(f":{victim.pid}")
        assert job.attempts == 1
        assert progress_at_kill < 0.95  # killed before any chunk of this job was stored

        rescuer_pid = await settle_with_new_worker(app, env, tmp_path / "rescuer.log", big_id)

        status, progress, job = await document_state(app, big_id)
        assert (status, progress) == ("ready", 1.0)
        assert job.status == "done"
        assert job.attempts == 2
        assert job.locked_by is not None
        assert job.locked_by.endswith(f":{rescuer_pid}")
        await assert_indexed_exactly_once(app, big_id)
        await assert_indexed_exactly_once(app, first_id)
