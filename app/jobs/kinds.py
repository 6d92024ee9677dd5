"""The kinds of background work and what running one job of them came to."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobKind(StrEnum):
    """Stored in `jobs.kind`: never rename a value."""

    INGEST = "ingest"
    PURGE = "purge"
    # Periodic (app/jobs/periodic.py): no tenant, started once per period.
    RETENTION_PURGE = "retention_purge"
    SHARD_COMPACTION = "shard_compaction"
    # Also queued by app.audit.service every worker.audit_checkpoint_entries entries of a chain.
    AUDIT_CHECKPOINT = "audit_checkpoint"
    # A backup into backup.dir with retention (app/backup/schedule.py).
    BACKUP = "backup"
    # Re-encrypting one tenant under its new data key (app/crypto/rotation.py).
    ROTATE_TENANT_KEY = "rotate_tenant_key"
    # Re-chunking a knowledge base's documents with its current settings (app/documents/reparse.py).
    REPARSE = "reparse"
    # Re-tokenizing a knowledge base's BM25 shards with its stemmer in force
    # (app/knowledge_base/bm25_rebuild.py).
    BM25_REBUILD = "bm25_rebuild"


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    tenant_id: int | None
    status: str  # done | failed | retry | lost
