"""The documents CLI's bulk work behind `cairn ingest` and `cairn index rebuild` (kept out of
cli.py's argument parsing; app/documents/cli.py holds the purge commands)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from app.container import Container
from app.documents.schemas import clean_tags
from app.documents.service import document_service
from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.kit import authz
from app.kit.actor import SystemActor
from app.kit.authz import SystemAccess
from app.kit.db import Database
from app.kit.errors import CairnError, Conflict, ResourceNotFound, ValidationFailed
from app.kit.public_ids import IdKind, encode_id
from app.kit.settings import Settings
from app.models import Document
from app.tenants.repository import tenant_repository
from ingest.embedding import EmbedderMismatch


def _files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            yield path
        else:
            raise ResourceNotFound(f"No such file or folder: {path}")


# Why a file was not queued, by the upload's error code, in words for the summary line.
_SKIP_REASONS = {
    "unsupported_media_type": "unsupported type",
    "duplicate_document": "already in the tenant",
    "empty_file": "empty",
    "payload_too_large": "over max_upload_bytes",
    "rate_limited": "refused by the upload quota",
}


@dataclass(frozen=True)
class Skipped:
    """A file that was not queued, and why."""

    path: Path
    code: str
    message: str

    @property
    def reason(self) -> str:
        return _SKIP_REASONS.get(self.code, self.code.replace("_", " "))


@dataclass(frozen=True)
class IngestSummary:
    """What `cairn ingest` did: files found, documents queued (public ids), files skipped."""

    files: int
    queued: list[str]
    statuses: dict[str, int]
    skipped: list[Skipped] = field(default_factory=list)

    def reasons(self) -> str:
        """Skipped files counted by reason, e.g. "2 unsupported type, 1 empty"."""
        counts = Counter(s.reason for s in self.skipped)
        return ", ".join(f"{n} {reason}" for reason, n in counts.most_common())

    def report(self) -> str:
        """The summary printed on stdout: counts, then one line per skipped file."""
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.statuses.items()))
        line = f"queued {len(self.queued)} of {self.files} files"
        if statuses:
            line += f"; now {statuses}"
        if self.skipped:
            line += f"; skipped {len(self.skipped)}: {self.reasons()}"
        return "\n".join([line, *(f"skipped {s.path}: {s.message}" for s in self.skipped)])

    def nothing_queued(self) -> str:
        """The one error line when nothing was queued."""
        if not self.files:
            return "nothing to ingest: no files found (hidden files are not read)"
        return f"nothing queued: all {self.files} files skipped ({self.reasons()})"


async def operator_access(database: Database, tenant: str) -> SystemAccess:
    """The bulk import's access to a tenant for operator tools (CLI, benchmarks): uploads
    record no user, audit entries name "System: bulk import", every sensitivity level."""
    async with database.read_sessionmaker() as session:
        found = await tenant_repository.get_by_slug(session, tenant)
    if found is None:
        raise ResourceNotFound(f"Tenant {tenant!r} not found")
    return SystemAccess(tenant=found, actor=SystemActor.BULK_IMPORT)


async def queue_files(
    runtime: Runtime,
    access: SystemAccess,
    files: Sequence[Path],
    *,
    tags: Sequence[str],
    sensitivity: str,
    progress: Progress,
) -> tuple[list[int], list[Skipped]]:
    """Store and queue each file, one transaction per file; (queued ids, skipped files)."""
    database, settings = runtime.database, runtime.settings
    queued: list[int] = []
    skipped: list[Skipped] = []
    task = progress.add_task("queue", total=len(files))
    for path in files:
        try:
            async with database.sessionmaker() as session, session.begin():
                with path.open("rb") as handle:
                    document, _ = await document_service.upload(
                        session,
                        access,
                        stream=handle,
                        filename=path.name,
                        title=None,
                        tags=tags,
                        sensitivity=sensitivity,
                        store=runtime.store,
                        max_bytes=settings.max_upload_bytes,
                    )
                queued.append(document.id)
        except CairnError as exc:
            skipped.append(Skipped(path, exc.code, exc.message))
        progress.advance(task)
    return queued, skipped


async def bulk_ingest(
    settings: Settings,
    paths: Sequence[Path],
    *,
    tenant: str,
    sensitivity: str,
    tags: str | None,
    wait: bool,
) -> IngestSummary:
    """Queue every file, then (with `wait`) run the pool until they are all processed."""
    if sensitivity not in authz.SENSITIVITY_LEVELS:
        raise ValidationFailed(f"sensitivity must be one of {', '.join(authz.SENSITIVITY_LEVELS)}")
    try:
        tag_list = clean_tags(tags.split(",")) if tags else []
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    container = Container(settings)
    database = container.database
    files = list(_files(paths))
    try:
        access = await operator_access(database, tenant)
        with _progress() as progress:
            queued, skipped = await queue_files(
                container,
                access,
                files,
                tags=tag_list,
                sensitivity=sensitivity,
                progress=progress,
            )
            if wait and queued:
                await process_until_done(container, queued, progress)
        async with database.read_sessionmaker() as session:
            rows = await session.execute(
                select(Document.status, func.count())
                .where(Document.id.in_(queued))
                .group_by(Document.status)
            )
            counts = {status: n for status, n in rows}
    finally:
        await container.close()
    return IngestSummary(
        files=len(files),
        queued=[encode_id(IdKind.DOCUMENT, key) for key in queued],
        statuses={str(status): int(n) for status, n in counts.items()},
        skipped=skipped,
    )


async def process_until_done(container: Container, ids: list[int], progress: Progress) -> None:
    """Run an in-process pool until every listed document is ready or failed."""
    database = container.database
    await container.start_workers()
    task = progress.add_task("ingest", total=len(ids))
    try:
        while True:
            async with database.read_sessionmaker() as session:
                open_jobs = await job_repository.open_count_for_documents(session, ids)
                processing = await session.scalar(
                    select(func.count())
                    .select_from(Document)
                    .where(Document.id.in_(ids), Document.status.in_(("queued", "processing")))
                )
            progress.update(task, completed=len(ids) - int(processing or 0))
            if not open_jobs and not processing:
                return
            await asyncio.sleep(0.5)
    finally:
        await container.stop_workers()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )


async def rebuild_index(settings: Settings, tenant: str, *, reembed: bool = False) -> int:
    """Rewrite a tenant's shards from the database (re-embedding every chunk on request)."""
    container = Container(settings)
    try:
        async with container.database.read_sessionmaker() as session:
            found = await tenant_repository.get_by_slug(session, tenant)
        if found is None:
            raise ResourceNotFound(f"Tenant {tenant!r} not found")
        embedder = await container.embedder()
        try:
            return await container.indexer.rebuild_tenant(
                found.id,
                embedder=embedder,
                reembed=reembed,
                heading_context=settings.embedding.heading_context,
            )
        except EmbedderMismatch as exc:
            raise Conflict(str(exc), code="embedder_mismatch") from exc
    finally:
        await container.close()
