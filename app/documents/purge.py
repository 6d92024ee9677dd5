"""Hard delete: a document is purged from every store, the purge is verified, and a receipt
says what was removed and how that was checked.

Requesting a purge (a tenant admin, `cairn documents purge`, or the retention purge) hides the
document at once (status `purging`), opens a pending receipt and queues a `purge` job. The job:

1. takes the document's chunks out of every shard file of the tenant, every version on disk
   (app/search/index/erasure.py), under the tenant's index writer lock;
2. asks the rewritten shards, with no visibility filter, for the document's own terms and its
   own chunk vectors: none of its chunks may come back;
3. in one transaction deletes the answers whose prompts held it (with their questions), its
   chunk rows, citations and jobs; then removes the cached answers whose prompts held it
   (already unreachable: the request bumped the tenant's content version) and checks that
   none is left in the cache store;
4. deletes the tenant's stored file unless another document of the tenant shares its content
   (files are kept per tenant, so no other tenant is ever consulted or mentioned), and
   upload temp files left by crashed uploads; checkpoints SQLite's WAL (secure_delete is on,
   so freed pages are zeroed) so no byte of it stays in the database files;
5. verifies that no row, shard file or stored file still holds it, and only then deletes the
   document row (title and file name go with it) and completes the receipt (hashed into the
   tenant's audit chain) in one transaction.

Every step can run again: a worker killed halfway leaves a job another worker finishes, and
an ingestion job still running for the document finds it `purging` and writes nothing. A
failed check keeps the document `purging` and the receipt pending with the reason; the job is
retried, and after its last attempt the receipt says `failed` — never `done`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.backup.tombstones import tombstone_service
from app.cache import versions
from app.chat.answer_cache import answer_cache
from app.documents.purge_repository import ChunkTrace, purge_repository
from app.documents.repository import document_repository
from app.documents.service import document_service
from app.documents.status import document_status
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.kit.actor import Actor, SystemActor
from app.kit.authz import TenantAccess
from app.kit.db import Database
from app.kit.errors import NotPermitted, ResourceNotFound
from app.kit.principal import Principal
from app.models import DeletionReceipt, Document, Job
from app.models.base import utcnow
from app.receipts.repository import receipt_repository
from app.receipts.service import VERSION_SUBJECT, Verification, receipt_service
from app.search.index import tokenize
from app.search.index.erasure import Recorder, files_holding, query_current_shards, remove_chunks
from app.search.index.shard_repository import shard_repository
from app.search.index.tokenize import STEMMERS, StemmerName

logger = logging.getLogger(__name__)

# Upload temp files older than this belong to uploads that died; a purge sweeps them.
STALE_UPLOAD_SECONDS = 3600
# What every document receipt counts (0 when nothing of that kind was there). `cache_entries`
# counts cached answers removed from this process's memory or from Redis; query embeddings hold
# no document content and are not touched.
REMOVED_COUNTS = (
    "chunks",
    "vectors",
    "postings",
    "files",
    "messages",
    "cache_entries",
    "shard_versions_rewritten",
    "shard_versions_deleted",
)
# Distinct terms of the document the BM25 check asks for (its rarest, most telling ones).
VERIFY_TERMS = 64


class PurgeIncomplete(Exception):
    """Verification found something of the document left; the purge is retried."""


@dataclass(frozen=True)
class Requested:
    document: Document
    receipt: DeletionReceipt
    job: Job | None  # None when a purge was already under way


class PurgeService:
    async def request(
        self,
        session: AsyncSession,
        requester: TenantAccess | SystemActor,
        *,
        tenant_id: int,
        document_id: int,
    ) -> Requested:
        """Hide the document now, open its receipt and queue the purge job (idempotent).

        `requester` is the caller's access (a document outside it answers 404 before the purge
        permission answers 403), or the server's own work (the operator, the retention purge, a
        restore), already allowed."""
        if isinstance(requester, TenantAccess):
            access = requester
            actor: Principal | SystemActor = access.principal
            document = await document_repository.get_readable(
                session, access, document_id, include_deleted=True
            )
            if document is None:
                raise ResourceNotFound("Document not found")
            if not access.can("documents", "purge"):
                raise NotPermitted("Only a tenant admin may purge a document")
        else:
            actor = requester
            document = await session.get(Document, document_id)
            if document is None or document.tenant_id != tenant_id:
                raise ResourceNotFound("Document not found")
        receipt = await receipt_service.open(
            session,
            subject_type="document",
            subject_id=document.id,
            tenant_id=document.tenant_id,
            requested_by=actor,
            content_sha256=document.content_sha256,
            name=f"{document.title}\n{document.filename or ''}",
        )
        job = await job_repository.open_for_subject(session, JobKind.PURGE, document.id)
        if job is not None:
            return Requested(document, receipt, None)
        document_status.mark_purging(document)
        document.deleted_at = document.deleted_at or utcnow()
        if isinstance(actor, Principal) and document.deleted_by is None:
            document.deleted_by = actor.user_id
        job = job_repository.add(
            session, Job(kind=JobKind.PURGE, tenant_id=document.tenant_id, subject_id=document.id)
        )
        await session.flush()
        await audit_service.record(
            session,
            action="document.purge_request",
            actor=actor,
            tenant_id=document.tenant_id,
            target_type="document",
            target_id=document.id,
            details={"receipt_id": receipt.id},
        )
        # Hidden from now on: no cached answer written from it may be found again.
        await versions.bump(session, document.tenant_id)
        return Requested(document, receipt, job)

    async def run(self, runtime: Runtime, job: Job) -> None:
        """The purge job (see the module docstring); raises while anything is left."""
        assert job.subject_id is not None, "a purge job names its document"
        assert job.tenant_id is not None, "a purge job belongs to a tenant"
        document_id, tenant_id = job.subject_id, job.tenant_id
        database = runtime.database
        # A replaced file whose old version is not erased yet (its ingestion job never ran, or
        # gave up): erased first, with its own receipt, so that no version escapes the purge.
        await self.erase_replaced(runtime, document_id, final=False)
        keys = await runtime.indexer.keys(tenant_id)
        async with database.read_sessionmaker() as session:
            receipt = await receipt_repository.open_for(session, "document", document_id)
            document = await session.get(Document, document_id)
            trace = await purge_repository.chunk_trace(session, document_id, keys[0])
            progress = json.loads(receipt.removed) if receipt else {}
        if receipt is None:
            logger.info("purge of document %s: no open receipt; done already", document_id)
            return
        receipt_id = receipt.id
        try:
            sha = document.content_sha256 if document else receipt.content_sha256
            verification = await self._erase(
                runtime, receipt_id, tenant_id, document_id, sha, trace, progress
            )
            if not verification.passed:
                raise PurgeIncomplete("; ".join(verification.failures))
            async with database.sessionmaker() as session, session.begin():
                # The row goes with the receipt's completion: until the purge is verified the
                # document stays visible to its admins as `purging`, with the reason.
                await purge_repository.delete_row(session, document_id)
                # Outlives the data and every backup taken before it (app/backup/): a restore
                # of one of those purges the document again before serving.
                await tombstone_service.record(
                    session, "document", tenant_id=tenant_id, subject_id=document_id, digest=sha
                )
                await self._complete(
                    session,
                    receipt_id,
                    verification,
                    "document.purge",
                    await self._requester(session, tenant_id, document_id),
                )
            await database.checkpoint_wal()
        except Exception as exc:
            final = job.attempts >= runtime.settings.worker.max_attempts
            async with database.sessionmaker() as session, session.begin():
                open_receipt = await receipt_repository.get(session, receipt_id)
                reason = f"{type(exc).__name__}: {exc}"
                if open_receipt is not None:
                    await receipt_service.record_failure(session, open_receipt, reason, final=final)
                left = await session.get(Document, document_id)
                if left is not None:
                    left.error_code = "purge_failed" if final else "purge_pending"
                    left.error = reason[:2000]
            raise

    async def _requester(self, session: AsyncSession, tenant_id: int, document_id: int) -> Actor:
        """Who the completed purge is recorded for: whoever requested it (the person, or the
        server's work that did), as the request's audit entry names them; the purge worker
        itself when that entry names nobody any more (its person was erased meanwhile)."""
        requested = await audit_service.purge_requested_by(session, tenant_id, document_id)
        return requested or SystemActor.PURGE

    async def erase_replaced(self, runtime: Runtime, document_id: int, *, final: bool) -> bool:
        """Erase the version of a document's file that a replacement put aside (PUT …/file):
        its chunks from every shard, database row and cached answer, the answers that quoted
        it, and its stored file; verified like a purge, then its receipt is completed. The
        document itself stays. A no-op (False) when no such erasure is pending; raises while
        anything is left (`final`: the caller's last attempt, the receipt then says failed).

        Run by the ingestion job before it reads the new file, and by a purge."""
        database = runtime.database
        async with database.read_sessionmaker() as session:
            receipt = await receipt_repository.open_for(session, VERSION_SUBJECT, document_id)
            if receipt is None or receipt.tenant_id is None:
                return False
            tenant_id, receipt_id = receipt.tenant_id, receipt.id
            keys = await runtime.indexer.keys(tenant_id)
            # No ingestion of the new file has stored chunks yet (it runs after this): every
            # chunk the document holds is of the old version.
            trace = await purge_repository.chunk_trace(session, document_id, keys[0])
            progress = json.loads(receipt.removed or "{}")
            sha = receipt.content_sha256
        try:
            verification = await self._erase(
                runtime, receipt_id, tenant_id, document_id, sha, trace, progress, version=True
            )
            # The new version is indexed next: readers in this process that hold the versions
            # the removal replaced would not take it from the indexer (it is not built on what
            # they hold) and would serve nothing of the document until their next poll. Forgotten,
            # they load the new version on the next search, as a document shown ready must be.
            for reader in runtime.indexer.readers:
                reader.invalidate(tenant_id)
            if not verification.passed:
                raise PurgeIncomplete("; ".join(verification.failures))
            async with database.sessionmaker() as session, session.begin():
                # The replacement's erasure: the server's purge work, on the replace an editor
                # asked for (audited `document.replace`, naming them).
                await self._complete(
                    session, receipt_id, verification, "document.version_purge", SystemActor.PURGE
                )
            await database.checkpoint_wal()
        except Exception as exc:
            async with database.sessionmaker() as session, session.begin():
                open_receipt = await receipt_repository.get(session, receipt_id)
                if open_receipt is not None:
                    await receipt_service.record_failure(
                        session, open_receipt, f"{type(exc).__name__}: {exc}", final=final
                    )
            raise
        return True

    async def _erase(
        self,
        runtime: Runtime,
        receipt_id: int,
        tenant_id: int,
        document_id: int,
        sha: str | None,
        trace: ChunkTrace,
        progress: dict[str, object],
        *,
        version: bool = False,
    ) -> Verification:
        """Steps 1-4 of the module docstring and their checks, for the document's chunks and
        the stored file `sha`; each step records its counts on the receipt as it commits.
        `version`: only a replaced version goes (the document, its jobs and its current file
        stay)."""
        database = runtime.database
        keys = await runtime.indexer.keys(tenant_id)
        chunk_ids = _remembered_ids(progress, trace)

        async def record(session: AsyncSession, counts: dict[str, int]) -> None:
            await receipt_repository.add_counts(session, receipt_id, counts)

        # Kept on the receipt until it is done: a retry after the rows are gone still knows
        # which chunk ids to look for.
        await self._remember(database, receipt_id, chunk_ids)
        await remove_chunks(
            database, runtime.settings.index_dir, tenant_id, chunk_ids, record, keys
        )
        verification = Verification()
        await self._check_index(runtime, tenant_id, trace, chunk_ids, verification)
        shared = await self._delete_rows(
            database, tenant_id, document_id, sha, record, jobs=not version
        )
        await self._delete_cached(runtime, tenant_id, document_id, record, verification)
        await self._delete_files(runtime, tenant_id, document_id, sha, shared, record)
        await database.checkpoint_wal()
        if version:
            await self._check_stores(
                runtime, tenant_id, document_id, sha, chunk_ids, verification, jobs=False
            )
        else:
            await self._check_stores(runtime, tenant_id, document_id, sha, chunk_ids, verification)
        return verification

    async def _complete(
        self,
        session: AsyncSession,
        receipt_id: int,
        verification: Verification,
        action: str,
        actor: Actor,
    ) -> None:
        """Complete the verified receipt with the counts every step recorded as it committed
        (see `record` in `_erase`), chaining it into the audit log as `action`."""
        receipt = await receipt_repository.get(session, receipt_id)
        assert receipt is not None
        totals = {
            name: count
            for name, count in json.loads(receipt.removed).items()
            if isinstance(count, int)
        }
        await receipt_service.complete(
            session,
            receipt,
            removed={**dict.fromkeys(REMOVED_COUNTS, 0), **totals},
            verification=verification,
            action=action,
            actor=actor,
        )

    async def _remember(self, database: Database, receipt_id: int, chunk_ids: np.ndarray) -> None:
        async with database.sessionmaker() as session, session.begin():
            receipt = await receipt_repository.get(session, receipt_id)
            if receipt is not None:
                removed = json.loads(receipt.removed or "{}")
                removed["pending_chunk_ids"] = [int(i) for i in chunk_ids]
                receipt.removed = json.dumps(removed, sort_keys=True)

    async def _check_index(
        self,
        runtime: Runtime,
        tenant_id: int,
        trace: ChunkTrace,
        chunk_ids: np.ndarray,
        verification: Verification,
    ) -> None:
        """The document's own words and vectors, asked of the current shards unfiltered."""
        async with runtime.database.read_sessionmaker() as session:
            current = await shard_repository.versions(session, tenant_id)
        # Asked as either stemmer would have made them: a knowledge base may have chosen
        # its own, and while its keyword index is rebuilt its shards hold both kinds.
        terms = sorted(
            {term for stemmer in STEMMERS for term in _telling_terms(trace.texts, stemmer)}
        )
        surfaced = await asyncio.to_thread(
            query_current_shards,
            runtime.settings.index_dir,
            tenant_id,
            current,
            chunk_ids,
            terms,
            trace.vectors,
            key=(await runtime.indexer.keys(tenant_id))[0],
        )
        verification.check(
            "bm25_own_terms",
            not surfaced.by_terms,
            f"{len(terms)} terms asked; {len(surfaced.by_terms)} of its chunks returned",
        )
        verification.check(
            "faiss_own_vectors",
            not surfaced.by_vectors,
            f"{len(trace.vectors)} vectors asked; "
            f"{len(surfaced.by_vectors)} of its chunks returned",
        )

    async def _delete_rows(
        self,
        database: Database,
        tenant_id: int,
        document_id: int,
        sha: str | None,
        record: Recorder,
        *,
        jobs: bool = True,
    ) -> bool:
        """Delete the document's contents (not yet its row; `jobs`: its jobs too); whether
        another document of the tenant holds the stored file `sha`."""
        async with database.sessionmaker() as session, session.begin():
            answers = await purge_repository.answers_from(session, document_id)
            messages = await purge_repository.delete_turns(session, answers)
            chunks = await purge_repository.delete_contents(session, document_id, jobs=jobs)
            await record(session, {"messages": messages, "chunks": chunks})
            if sha is None:
                return False
            return await purge_repository.shares_content(session, tenant_id, sha, document_id)

    async def _delete_cached(
        self,
        runtime: Runtime,
        tenant_id: int,
        document_id: int,
        record: Recorder,
        verification: Verification,
    ) -> None:
        """Remove the cached answers whose prompts held the document, then look again."""
        cache = runtime.cache
        removed = await answer_cache.forget_document(cache, tenant_id, document_id)
        # One stored meanwhile by a request that grounded before the purge was requested (it
        # is filed under the old content version, so it was never reachable) shows here.
        left = await answer_cache.forget_document(cache, tenant_id, document_id)
        where = (
            "Redis (shared by every process)"
            if cache.backend == "redis"
            else "this process's memory; other processes' memory caches cannot be reached from "
            "here: their entries were unreachable from the purge request on (content version) "
            "and expire with answer_ttl_seconds"
        )
        verification.check(
            "answer_cache", left == 0, f"{removed + left} cached answers removed from {where}"
        )
        async with runtime.database.sessionmaker() as session, session.begin():
            await record(session, {"cache_entries": removed + left})

    async def _delete_files(
        self,
        runtime: Runtime,
        tenant_id: int,
        document_id: int,
        sha: str | None,
        shared: bool,
        record: Recorder,
    ) -> None:
        """The tenant's stored original (unless shared within the tenant) and stale upload
        temp files."""
        deleted = 0
        store = runtime.store
        legacy = store.legacy_path_for(sha) if sha else None
        if sha and legacy is not None and await asyncio.to_thread(legacy.exists):
            # A blob of the old shared layout: every other holder gets its own copy first.
            await document_service.relocate_legacy_blob(
                runtime.database, store, sha, except_document=document_id
            )
        if sha and not shared and await asyncio.to_thread(store.exists, tenant_id, sha):
            await asyncio.to_thread(store.delete, tenant_id, sha)
            deleted += 1
        deleted += await asyncio.to_thread(store.remove_stale_uploads, STALE_UPLOAD_SECONDS)
        async with runtime.database.sessionmaker() as session, session.begin():
            await record(session, {"files": deleted})

    async def _check_stores(
        self,
        runtime: Runtime,
        tenant_id: int,
        document_id: int,
        sha: str | None,
        chunk_ids: np.ndarray,
        verification: Verification,
        *,
        jobs: bool = True,
    ) -> None:
        async with runtime.database.read_sessionmaker() as session:
            left = await purge_repository.leftovers(
                session, document_id, [int(i) for i in chunk_ids], jobs=jobs
            )
            shared = bool(sha) and await purge_repository.shares_content(
                session, tenant_id, sha or "", document_id
            )
        for table, count in left.items():
            verification.check(f"rows:{table}", count == 0, f"{count} left")
        holding = await asyncio.to_thread(
            files_holding,
            runtime.settings.index_dir,
            tenant_id,
            chunk_ids,
            (await runtime.indexer.keys(tenant_id))[0],
        )
        verification.check(
            "shard_files", not holding, f"{len(holding)} shard files still hold its chunks"
        )
        if sha:
            exists = await asyncio.to_thread(runtime.store.exists, tenant_id, sha)
            if shared:
                verification.check(
                    "stored_file",
                    exists,
                    "kept: another document of this knowledge base holds the same content",
                )
            else:
                verification.check("stored_file", not exists, "removed")

    async def expired(
        self, session: AsyncSession, *, now: datetime, default_days: int
    ) -> list[tuple[int, int]]:
        """(tenant, document) pairs the retention purge would purge at `now`."""
        return await purge_repository.expired(session, now=now, default_days=default_days)

    async def purge_expired(self, runtime: Runtime) -> int:
        """The retention purge: request a purge of every document past its retention."""
        requested = 0
        async with runtime.database.sessionmaker() as session, session.begin():
            due = await self.expired(
                session, now=runtime.now(), default_days=runtime.settings.retention_days
            )
            for tenant_id, document_id in due:
                done = await self.request(
                    session,
                    SystemActor.RETENTION_PURGE,
                    tenant_id=tenant_id,
                    document_id=document_id,
                )
                requested += done.job is not None
        return requested


def _remembered_ids(progress: dict[str, object], trace: ChunkTrace) -> np.ndarray:
    """The chunk ids to purge: those in the database now, and those a previous attempt saw."""
    earlier = progress.get("pending_chunk_ids") or []
    assert isinstance(earlier, list)
    return np.union1d(trace.ids, np.array(earlier, dtype=np.int64)).astype(np.int64)


def _telling_terms(texts: list[str], stemmer: StemmerName = "english") -> list[str]:
    """The document's least frequent distinct terms (rarest first), which identify it best.
    Tokenized as the shards were (with their stemmer), or no term could ever match."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text, stemmer=stemmer))
    return [term for term, _ in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))][
        :VERIFY_TERMS
    ]


purge_service = PurgeService()
