"""A knowledge base's settings: the server's defaults overlaid with what its admin chose, the
chunking ingestion uses, the retrieval defaults searches use, the BM25 stemmer the index
writer uses (a change queues a keyword-index rebuild), and re-parse requests."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.kit.authz import TenantAccess
from app.kit.errors import Conflict, ResourceNotFound, ValidationFailed
from app.kit.settings import ChunkingConfig, Settings
from app.knowledge_base.repository import SECTIONS, knowledge_base_repository
from app.knowledge_base.schemas import (
    BM25Settings,
    ChunkingSettings,
    KnowledgeBaseSettings,
    KnowledgeBaseSettingsUpdate,
    ReparseRequest,
    RetrievalSettings,
)
from app.models import Job
from app.search.index.shard_repository import shard_repository


def _defaults(settings: Settings) -> dict[str, dict[str, Any]]:
    """The server's configured value of every knowledge-base key, by section."""
    chunking = settings.chunking
    return {
        "chunking": {
            "size": chunking.max_tokens,
            "overlap": chunking.overlap_tokens,
            "separators": list(chunking.separators),
            "template": chunking.template,
        },
        "retrieval": {
            "mode": "hybrid",
            "top_k": 10,
            "weights": {
                "bm25": settings.search.bm25_weight,
                "vector": settings.search.vector_weight,
            },
            "min_score": None,
        },
        "bm25": {"stemmer": settings.index.bm25_stemmer},
    }


_MODELS: dict[str, type[BaseModel]] = {
    "chunking": ChunkingSettings,
    "retrieval": RetrievalSettings,
    "bm25": BM25Settings,
}


def _validated(merged: dict[str, dict[str, Any]]) -> KnowledgeBaseSettings:
    return KnowledgeBaseSettings.model_validate({section: merged[section] for section in SECTIONS})


def _fits(values: dict[str, Any], section: str) -> bool:
    try:
        _MODELS[section].model_validate(values)
    except ValueError:
        return False
    return True


def _overridden(stored: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(f"{section}.{key}" for section in SECTIONS for key in stored[section])


class KnowledgeBaseService:
    async def effective(
        self, session: AsyncSession, tenant_id: int, settings: Settings
    ) -> KnowledgeBaseSettings:
        """The settings in force: the knowledge base's own keys over the server's, and the
        keyword-index rebuild under way, if any."""
        stored = await knowledge_base_repository.stored(session, tenant_id)
        current = self._merge(settings, stored)
        rebuild = await job_repository.open_for_subject(session, JobKind.BM25_REBUILD, tenant_id)
        current.rebuild_job_id = rebuild.id if rebuild is not None else None
        return current

    def _merge(
        self, settings: Settings, stored: dict[str, dict[str, Any]]
    ) -> KnowledgeBaseSettings:
        defaults = _defaults(settings)
        try:
            merged = _validated({s: defaults[s] | stored[s] for s in SECTIONS})
        except ValueError:
            # A stored key the server's new defaults no longer fit (an overlap above a
            # smaller default size): that section is the server's, whole, rather than an
            # error on every upload and search.
            kept = {s: stored[s] if _fits(defaults[s] | stored[s], s) else {} for s in SECTIONS}
            merged = _validated({s: defaults[s] | kept[s] for s in SECTIONS})
            stored = kept
        merged.overridden = _overridden(stored)
        return merged

    async def chunking_config(
        self, session: AsyncSession, tenant_id: int, settings: Settings
    ) -> ChunkingConfig:
        """The chunker's configuration for the tenant's next document."""
        stored = await knowledge_base_repository.stored(session, tenant_id)
        chunking = self._merge(settings, stored).chunking
        base = settings.chunking
        return ChunkingConfig(
            max_tokens=chunking.size,
            overlap_tokens=chunking.overlap,
            # A smaller size than the configured minimum would make every unit "too short".
            min_tokens=min(base.min_tokens, chunking.size // 4),
            separators=tuple(chunking.separators),
            template=chunking.template,
        )

    async def retrieval(
        self, session: AsyncSession, tenant_id: int, settings: Settings
    ) -> RetrievalSettings:
        """What the tenant's searches do when a request does not say."""
        stored = await knowledge_base_repository.stored(session, tenant_id)
        return self._merge(settings, stored).retrieval

    async def update(
        self,
        session: AsyncSession,
        access: TenantAccess,
        data: KnowledgeBaseSettingsUpdate,
        settings: Settings,
    ) -> tuple[KnowledgeBaseSettings, Job | None]:
        """Change some keys (or return them to the server's default); audited. A change of
        the BM25 stemmer in force queues a rebuild of the tenant's keyword index, returned
        second (the caller sends it to the workers after the commit)."""
        tenant_id = access.tenant_id
        stored = await knowledge_base_repository.stored(session, tenant_id)
        defaults = _defaults(settings)
        before = self._merge(settings, stored)
        for key in data.reset:
            section, _, name = key.partition(".")
            if section not in stored or name not in defaults[section]:
                raise ValidationFailed(f"unknown setting {key!r} in reset")
            stored[section].pop(name, None)
        changes = {"chunking": data.chunking, "retrieval": data.retrieval, "bm25": data.bm25}
        for section, change in changes.items():
            if change is not None:
                stored[section] |= change.model_dump(exclude_unset=True)
        try:
            # Checked whole: an overlap may only be judged against the size in force.
            merged = _validated({s: defaults[s] | stored[s] for s in SECTIONS})
        except ValueError as exc:
            raise ValidationFailed(_first_error(exc)) from exc
        await knowledge_base_repository.store(
            session, tenant_id, stored, user_id=access.principal.user_id
        )
        changed = sorted(
            {
                f"{section}.{name}"
                for section, change in changes.items()
                if change is not None
                for name in change.model_fields_set
            }
            | set(data.reset)
        )
        details: dict[str, Any] = {"keys": changed}
        rebuild: Job | None = None
        if merged.bm25.stemmer != before.bm25.stemmer:
            details["bm25.stemmer"] = {"from": before.bm25.stemmer, "to": merged.bm25.stemmer}
            rebuild = await self._queue_bm25_rebuild(session, tenant_id)
        await audit_service.record(
            session,
            action="settings.update",
            actor=access.principal,
            tenant_id=tenant_id,
            target_type="tenant",
            target_id=tenant_id,
            details=details,
        )
        merged.overridden = _overridden(stored)
        if rebuild is None:
            running = await job_repository.open_for_subject(
                session, JobKind.BM25_REBUILD, tenant_id
            )
            merged.rebuild_job_id = running.id if running is not None else None
        else:
            merged.rebuild_job_id = rebuild.id
        return merged, rebuild

    async def _queue_bm25_rebuild(self, session: AsyncSession, tenant_id: int) -> Job | None:
        """A job re-tokenizing each of the tenant's BM25 shards with its stemmer in force
        (None when nothing is indexed yet: the next write uses the new stemmer anyway).

        Always a new job, even beside one still running: each shard is checked under the
        writer lock against the stemmer in force *then*, so a job that began before this
        change might already have passed some shards; the new one goes over them again
        (shards already right are only read)."""
        shards = await shard_repository.count(session, tenant_id, "bm25")
        if shards == 0:
            return None
        return await _queue(session, JobKind.BM25_REBUILD, tenant_id, {"after": -1}, shards)

    async def request_reparse(
        self, session: AsyncSession, access: TenantAccess, data: ReparseRequest
    ) -> Job:
        """Queue a re-parse of the tenant's ready documents (all, or the chosen); one at a time
        per tenant (409 while one runs)."""
        tenant_id = access.tenant_id
        running = await job_repository.open_for_subject(session, JobKind.REPARSE, tenant_id)
        if running is not None:
            raise Conflict("A re-parse of this knowledge base is already running")
        ids = sorted(set(data.document_ids)) if data.document_ids is not None else None
        if ids is not None:
            known = await knowledge_base_repository.tenant_document_ids(session, tenant_id, ids)
            if len(known) != len(ids):
                raise ResourceNotFound("Document not found")
        total = await knowledge_base_repository.count_reparsable(session, tenant_id, ids)
        if total == 0:
            raise Conflict(
                "No ready document to re-parse (documents still processing, failed or deleted "
                "are left out)"
            )
        payload = {"document_ids": ids, "keep_curated": data.keep_curated, "after": 0}
        job = await _queue(session, JobKind.REPARSE, tenant_id, payload, total)
        await audit_service.record(
            session,
            action="documents.reparse",
            actor=access.principal,
            tenant_id=tenant_id,
            target_type="job",
            target_id=job.id,
            details={"documents": total, "keep_curated": data.keep_curated},
        )
        return job

    async def job(self, session: AsyncSession, access: TenantAccess, job_id: int) -> Job:
        """One of the tenant's background jobs (404 for any other)."""
        job = await knowledge_base_repository.tenant_job(session, access.tenant_id, job_id)
        if job is None:
            raise ResourceNotFound("Job not found")
        return job


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))
    return str(exc)


async def _queue(
    session: AsyncSession, kind: JobKind, tenant_id: int, payload: dict[str, Any], total: int
) -> Job:
    """A knowledge-base job (its subject is the tenant), resumable from `payload`, with its
    `total` steps; flushed so that it has its id."""
    job = job_repository.add(
        session,
        Job(
            kind=kind,
            tenant_id=tenant_id,
            subject_id=tenant_id,
            payload=json.dumps(payload),
            total=total,
        ),
    )
    await session.flush()
    return job


knowledge_base_service = KnowledgeBaseService()
