"""Keyword-index rebuild: re-tokenize a knowledge base's BM25 shards after its stemmer changed.

One job per change (JobKind.BM25_REBUILD), shards in number order, `done` counted per shard
and the last finished shard kept in the job's payload, so a retried job resumes. Each shard is
rewritten by the index writer under the tenant's writer lock (`Indexer.retokenize_bm25`): a
new version made from the stored chunk text (opened with the tenant's key) with the stemmer in
force at that moment, vectors untouched. Uploads go on between shards, and searches all along:
each shard is searched with the analyzer it records, so old and new shards answer side by side.
"""

from __future__ import annotations

import json
from typing import Any

from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.models import Job
from app.search.index.shard_repository import shard_repository


async def run_bm25_rebuild(runtime: Runtime, job: Job) -> None:
    """Re-tokenize the tenant's BM25 shards from where the job stopped."""
    assert job.tenant_id is not None, "a keyword-index rebuild names its tenant"
    tenant_id = job.tenant_id
    payload: dict[str, Any] = json.loads(job.payload or "{}")
    done, total = job.done, job.total
    while True:
        async with runtime.database.read_sessionmaker() as session:
            remaining = await shard_repository.shard_numbers(
                session, tenant_id, "bm25", after=int(payload.get("after", -1))
            )
        if not remaining:
            return
        shard_no = remaining[0]
        await runtime.indexer.retokenize_bm25(tenant_id, shard_no)
        payload["after"] = shard_no
        # A shard opened since the job was queued (uploads go on) counts too.
        done += 1
        total = max(total, done + len(remaining) - 1)
        async with runtime.database.sessionmaker() as session, session.begin():
            await job_repository.record_progress(
                session, job.id, done=done, total=total, payload=json.dumps(payload)
            )
