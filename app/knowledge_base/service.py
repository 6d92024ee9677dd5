"""A knowledge base's settings: the server's defaults overlaid with what its admin chose, the
chunking ingestion uses, the retrieval defaults searches use, and re-parse requests."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.kit.authz import TenantAccess
from app.kit.errors import Conflict, ResourceNotFound, ValidationFailed
from app.kit.settings import ChunkingConfig, Settings
from app.knowledge_base.repository import knowledge_base_repository
from app.knowledge_base.schemas import (
    ChunkingSettings,
    KnowledgeBaseSettings,
    KnowledgeBaseSettingsUpdate,
    ReparseRequest,
    RetrievalSettings,
)
from app.models import Job


def _defaults(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    chunking = settings.chunking
    return (
        {
            "size": chunking.max_tokens,
            "overlap": chunking.overlap_tokens,
            "separators": list(chunking.separators),
            "template": chunking.template,
        },
        {
            "mode": "hybrid",
            "top_k": 10,
            "weights": {
                "bm25": settings.search.bm25_weight,
                "vector": settings.search.vector_weight,
            },
            "min_score": None,
        },
    )


class KnowledgeBaseService:
    async def effective(
        self, session: AsyncSession, tenant_id: int, settings: Settings
    ) -> KnowledgeBaseSettings:
        """The settings in force: the knowledge base's own keys over the server's."""
        chunking, retrieval = await knowledge_base_repository.stored(session, tenant_id)
        return self._merge(settings, chunking, retrieval)

    def _merge(
        self, settings: Settings, chunking: dict[str, Any], retrieval: dict[str, Any]
    ) -> KnowledgeBaseSettings:
        base_chunking, base_retrieval = _defaults(settings)
        try:
            return KnowledgeBaseSettings(
                chunking=ChunkingSettings.model_validate(base_chunking | chunking),
                retrieval=RetrievalSettings.model_validate(base_retrieval | retrieval),
                overridden=sorted(
                    [f"chunking.{k}" for k in chunking] + [f"retrieval.{k}" for k in retrieval]
                ),
            )
        except ValueError:
            # A stored key the server's new defaults no longer fit (an overlap above a
            # smaller default size): the server's settings, whole, rather than an error on
            # every upload and search.
            return KnowledgeBaseSettings(
                chunking=ChunkingSettings.model_validate(base_chunking),
                retrieval=RetrievalSettings.model_validate(base_retrieval),
            )

    async def chunking_config(
        self, session: AsyncSession, tenant_id: int, settings: Settings
    ) -> ChunkingConfig:
        """The chunker's configuration for the tenant's next document."""
        chunking = (await self.effective(session, tenant_id, settings)).chunking
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
        return (await self.effective(session, tenant_id, settings)).retrieval

    async def update(
        self,
        session: AsyncSession,
        access: TenantAccess,
        data: KnowledgeBaseSettingsUpdate,
        settings: Settings,
    ) -> KnowledgeBaseSettings:
        """Change some keys (or return them to the server's default); audited."""
        chunking, retrieval = await knowledge_base_repository.stored(session, access.tenant_id)
        for key in data.reset:
            section, _, name = key.partition(".")
            target = {"chunking": chunking, "retrieval": retrieval}.get(section)
            known = _defaults(settings)[0 if section == "chunking" else 1]
            if target is None or name not in known:
                raise ValidationFailed(f"unknown setting {key!r} in reset")
            target.pop(name, None)
        if data.chunking is not None:
            chunking |= data.chunking.model_dump(exclude_unset=True)
        if data.retrieval is not None:
            retrieval |= data.retrieval.model_dump(exclude_unset=True)
        base_chunking, base_retrieval = _defaults(settings)
        try:
            # Checked whole: an overlap may only be judged against the size in force.
            merged = KnowledgeBaseSettings(
                chunking=ChunkingSettings.model_validate(base_chunking | chunking),
                retrieval=RetrievalSettings.model_validate(base_retrieval | retrieval),
            )
        except ValueError as exc:
            raise ValidationFailed(_first_error(exc)) from exc
        await knowledge_base_repository.store(
            session,
            access.tenant_id,
            chunking=chunking,
            retrieval=retrieval,
            user_id=access.principal.user_id,
        )
        changed = sorted(
            {f"chunking.{k}" for k in (data.chunking.model_fields_set if data.chunking else ())}
            | {
                f"retrieval.{k}"
                for k in (data.retrieval.model_fields_set if data.retrieval else ())
            }
            | set(data.reset)
        )
        await audit_service.record(
            session,
            action="settings.update",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="tenant",
            target_id=access.tenant_id,
            details={"keys": changed},
        )
        merged.overridden = sorted(
            [f"chunking.{k}" for k in chunking] + [f"retrieval.{k}" for k in retrieval]
        )
        return merged

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
        job = job_repository.add(
            session,
            Job(
                kind=JobKind.REPARSE,
                tenant_id=tenant_id,
                subject_id=tenant_id,
                payload=json.dumps(
                    {"document_ids": ids, "keep_curated": data.keep_curated, "after": 0}
                ),
                total=total,
            ),
        )
        await session.flush()
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


knowledge_base_service = KnowledgeBaseService()
