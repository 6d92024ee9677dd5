"""Checkpoints come at least every `worker.audit_checkpoint_entries` entries of a chain (queued
with the entry that reaches the count) and every `worker.audit_checkpoint_seconds` (the periodic
job), so what even a holder of the audit secret could rewrite unseen is only the newest few."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.audit.chain import GENESIS_HASH, compute_hash, entry_seal
from app.audit.checkpoints import CheckpointLog, write_checkpoints
from app.audit.service import VerifyReport, audit_service
from app.jobs.kinds import JobKind
from app.jobs.periodic import periodic_tasks
from app.jobs.repository import job_repository
from app.kit.actor import SystemActor
from app.kit.db import database_for
from app.kit.settings import Settings
from app.models import AuditChainHead, AuditEntry, Job
from tests.conftest import TEST_AUDIT_SECRET, Api, make_settings
from tests.helpers import key_of

EVERY = 4
CHECKPOINT = JobKind.AUDIT_CHECKPOINT.value


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # No embedded workers: the test runs the queued checkpoint jobs itself, like a worker would;
    # no periodic run either, so every checkpoint here was queued by the count.
    return make_settings(
        database_url,
        tmp_path / "data",
        embedded_workers=False,
        worker={"audit_checkpoint_seconds": 0, "audit_checkpoint_entries": EVERY},
    )


async def _queued(app: FastAPI) -> int:
    async with app.state.database.read_sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == CHECKPOINT, Job.status == "queued")
        )
        return int(count or 0)


async def _run_queued(app: FastAPI, settings: Settings) -> int:
    """What a worker does with queued audit_checkpoint jobs: claim, write, finish."""
    runs = 0
    while True:
        async with app.state.database.sessionmaker() as session, session.begin():
            job = await job_repository.claim(
                session, worker="test", lease=timedelta(minutes=1), kinds=[CHECKPOINT]
            )
            if job is None:
                return runs
            await write_checkpoints(session, settings)
            await job_repository.finish(session, job.id, status="done")
        runs += 1


async def _record(app: FastAPI, tenant_id: int, *, commit: bool = True) -> int:
    """One more entry in the tenant's chain; its seq."""
    async with app.state.database.sessionmaker() as session:
        entry = await audit_service.record(
            session, action="test.event", actor=SystemActor.OPERATOR, tenant_id=tenant_id
        )
        await (session.commit() if commit else session.rollback())
        return entry.seq


def _signed_seqs(settings: Settings, chain: str) -> list[int]:
    log = CheckpointLog(settings)
    public = log.names.public(chain)
    return [c.seq for _, c in log.read() if c is not None and c.chain == public]


async def _verify_all(app: FastAPI, log: CheckpointLog) -> VerifyReport:
    async with app.state.database.sessionmaker() as session:
        return await audit_service.verify(session, checkpoints=log)


async def _rewrite_with_the_secret(app: FastAPI, chain: str, seq: int) -> None:
    """Edit the entry at `seq` and recompute every later hash, seal and the head: what someone
    holding the database and the audit secret could do, which only a checkpoint catches."""
    async with app.state.database.sessionmaker() as session, session.begin():
        rows = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
            )
        )
        rows[seq - 1].details = json.dumps({"role": "admin"}, separators=(",", ":"))
        prev = GENESIS_HASH
        for row in rows:
            row.prev_hash = prev
            row.entry_hash = compute_hash(row)
            row.seal = entry_seal(TEST_AUDIT_SECRET, row.entry_hash)
            prev = row.entry_hash
        head = await session.get(AuditChainHead, chain)
        assert head is not None
        head.last_hash = prev


async def test_a_checkpoint_is_queued_with_every_nth_entry_of_a_chain(
    api: Api, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    tenant_id = key_of((await api.tenant("hr"))["id"])
    chain = f"tenant:{tenant_id}"
    await _run_queued(app, settings)
    seq = await _record(app, tenant_id)
    while seq % EVERY != EVERY - 1:
        seq = await _record(app, tenant_id)
    await _run_queued(app, settings)  # whatever the other chains' counts queued
    assert await _queued(app) == 0

    # The entry that reaches the count queues the job in its own transaction: none when it
    # rolls back, one when it commits.
    await _record(app, tenant_id, commit=False)
    assert await _queued(app) == 0
    reached = await _record(app, tenant_id)
    assert reached % EVERY == 0
    assert await _queued(app) == 1
    assert await _run_queued(app, settings) == 1
    assert _signed_seqs(settings, chain)[-1] == reached

    # Fewer than EVERY entries later nothing is queued; the EVERY-th queues one job only,
    # however many chains reach their count before a worker starts it.
    for _ in range(EVERY - 1):
        await _record(app, tenant_id)
    assert await _queued(app) == 0
    await _record(app, tenant_id)
    await _record(app, tenant_id)
    assert await _queued(app) == 1

    # An entry now covered by a checkpoint: rewriting it with recomputed hashes and seals
    # fools the chain and the seals, not the checkpoint.
    await _rewrite_with_the_secret(app, chain, reached)
    walk_only = await _verify_all(app, CheckpointLog(settings, path=tmp_path / "none.jsonl"))
    assert walk_only.ok, walk_only.first_bad
    report = await _verify_all(app, CheckpointLog(settings))
    assert report.first_bad is not None
    assert (report.first_bad.chain, report.first_bad.seq) == (chain, reached)
    assert report.first_bad.reason.startswith("checkpoint mismatch")


async def test_the_default_cadence(tmp_path: Path) -> None:
    """At most 100 entries of a chain, or 5 minutes of a chain that moved, go unsigned."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'cairn.sqlite'}", tmp_path)
    assert settings.worker.audit_checkpoint_entries == 100
    assert settings.worker.audit_checkpoint_seconds == 300
    periods = {task.kind: task.every for task in periodic_tasks(settings)}
    assert periods[JobKind.AUDIT_CHECKPOINT] == timedelta(minutes=5)
    database = database_for(settings)
    async with database.sessionmaker() as session:
        assert session.info["audit_checkpoint_entries"] == 100
    await database.dispose()


async def test_the_checkpoint_job_notices_a_file_rewritten_in_place(
    api: Api, app: FastAPI, settings: Settings
) -> None:
    """The job reads only what was appended since it last looked; a file edited in place (same
    size) is read again, so a forged last line cannot stand in for a real checkpoint."""
    tenant_id = key_of((await api.tenant("hr"))["id"])
    async with app.state.database.sessionmaker() as session, session.begin():
        assert await write_checkpoints(session, settings) >= 2
    await _record(app, tenant_id)
    async with app.state.database.sessionmaker() as session, session.begin():
        assert await write_checkpoints(session, settings) == 1
        assert await write_checkpoints(session, settings) == 0  # nothing moved
    path = CheckpointLog(settings).path
    lines = path.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])
    signature = last["signature"]
    last["signature"] = ("B" if signature[0] != "B" else "C") + signature[1:]
    forged = json.dumps(last, separators=(",", ":")) + "\n"
    assert len(forged) == len(lines[-1])
    path.write_text("".join(lines[:-1]) + forged)
    # The newest valid checkpoint of hr is now the older one: the head moved past it.
    async with app.state.database.sessionmaker() as session, session.begin():
        assert await write_checkpoints(session, settings) == 1
