"""`cairn documents purge` and `cairn purge`: hard deletes from the console (registered in
app/cli.py). The operator acts as the system (no user); the purge runs right here, through the
same job and verification as a worker would, and prints its receipt."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from app.container import Container
from app.documents.purge import purge_service
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.jobs.runner import JobClaimer, simple_handler
from app.jobs.runtime import Runtime
from app.kit.actor import SystemActor
from app.kit.errors import ResourceNotFound
from app.kit.public_ids import IdKind, encode_id, public_ids
from app.kit.settings import Settings
from app.models import Job
from app.receipts.repository import receipt_repository
from app.receipts.schemas import ReceiptRead
from app.tenants.repository import tenant_repository


async def run_purges(runtime: Runtime, job_ids: list[int]) -> None:
    """Run these purge jobs now, in this process (a worker that has one leased skips it)."""
    claimer = JobClaimer(runtime, worker_id="cli", kinds=[JobKind.PURGE])

    async def work(job: Job) -> None:
        await purge_service.run(runtime, job)

    handle = simple_handler(runtime, "cli", work)
    for job_id in job_ids:
        while (job := await claimer.claim(job_id)) is not None:
            outcome = await handle(job)
            if outcome.status != "retry":
                break


async def purge_document(settings: Settings, tenant: str, document: str) -> str:
    """Purge one document now; its receipt as JSON."""
    runtime = Container(settings)
    try:
        key = public_ids().decode(IdKind.DOCUMENT, document)
        if key is None:
            raise ResourceNotFound(f"{document!r} is not a document id (doc_…)")
        async with runtime.database.sessionmaker() as session, session.begin():
            found = await tenant_repository.get_by_slug(session, tenant)
            if found is None:
                raise ResourceNotFound(f"Tenant {tenant!r} not found")
            requested = await purge_service.request(
                session, SystemActor.OPERATOR, tenant_id=found.id, document_id=key
            )
            receipt_id = requested.receipt.id
            job_ids = [requested.job.id] if requested.job is not None else []
        await run_purges(runtime, job_ids)
        async with runtime.database.read_sessionmaker() as session:
            receipt = await receipt_repository.get(session, receipt_id)
            assert receipt is not None
            return ReceiptRead.of(receipt).model_dump_json(indent=2)
    finally:
        await runtime.close()


async def retention_purge(settings: Settings, *, dry_run: bool) -> str:
    """The retention purge now (or, dry, what it would purge)."""
    runtime = Container(settings)
    try:
        async with runtime.database.read_sessionmaker() as session:
            due = await purge_service.expired(
                session, now=runtime.now(), default_days=settings.retention_days
            )
        listing = [
            {"tenant_id": encode_id(IdKind.TENANT, t), "document_id": encode_id(IdKind.DOCUMENT, d)}
            for t, d in due
        ]
        if dry_run:
            return json.dumps({"would_purge": listing}, indent=2)
        await purge_service.purge_expired(runtime)
        async with runtime.database.read_sessionmaker() as session:
            jobs = [
                job.id
                for _, document_id in due
                if (
                    job := await job_repository.open_for_subject(
                        session, JobKind.PURGE, document_id
                    )
                )
                is not None
            ]
        await run_purges(runtime, jobs)
        return json.dumps({"purged": listing}, indent=2)
    finally:
        await runtime.close()


DocumentArg = Annotated[str, typer.Argument(help="the document's id (doc_…)")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant slug")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="list what would be purged")]
