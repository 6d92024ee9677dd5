"""Who may see which chunks: the visibility a search runs under, and the per-shard id masks.

Visibility is decided per request, from the database, before any ranking: a document is
searchable when it belongs to the tenant, is ready, is not soft-deleted, has a sensitivity
the caller's role may see and passes the request's filters. The visible documents' ids are
turned into an allowed-chunk-id list per shard (through the chunk → document map cached with
the shard), and that list is applied inside FAISS (an ``IDSelector``) and inside BM25 scoring,
so top-k is always filled from visible chunks and nothing invisible is ever ranked.

Nothing about document state is cached: a soft delete, restore or sensitivity change counts
on the very next search, in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from app.kit.authz import SENSITIVITY_LEVELS, TenantAccess
from app.search.schemas import SearchFilters

IdArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Visibility:
    """The documents of one tenant a search may draw from."""

    tenant_id: int
    sensitivity: tuple[str, ...]
    tags: tuple[str, ...] = ()
    document_ids: tuple[int, ...] | None = None
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None

    @classmethod
    def of(cls, access: TenantAccess, filters: SearchFilters | None = None) -> Visibility:
        """What the caller of a request may search in its tenant, narrowed by ``filters``."""
        return cls.for_tenant(access.tenant_id, access.sensitivity, filters)

    @classmethod
    def for_tenant(
        cls,
        tenant_id: int,
        sensitivity: tuple[str, ...] = SENSITIVITY_LEVELS,
        filters: SearchFilters | None = None,
    ) -> Visibility:
        """A visibility without a request (CLI, evaluation, benchmarks): all levels by default."""
        unknown = set(sensitivity) - set(SENSITIVITY_LEVELS)
        if unknown:
            raise ValueError(f"unknown sensitivity levels {sorted(unknown)}")
        if filters is None:
            return cls(tenant_id, tuple(sensitivity))
        return cls(
            tenant_id,
            tuple(sensitivity),
            tags=tuple(filters.tags or ()),
            document_ids=tuple(filters.document_ids) if filters.document_ids is not None else None,
            uploaded_after=filters.uploaded_after,
            uploaded_before=filters.uploaded_before,
        )

    @property
    def filtered(self) -> bool:
        """Whether request filters narrow the visible documents."""
        return bool(
            self.tags
            or self.document_ids is not None
            or self.uploaded_after is not None
            or self.uploaded_before is not None
        )


def allowed_ids(
    chunk_ids: IdArray,
    document_of: IdArray,
    visible: IdArray,
    documents: IdArray | None = None,
) -> IdArray | None:
    """The chunk ids of a shard whose document is visible; None when every one of them is.

    ``chunk_ids`` are all the ids stored in the shard and ``document_of`` their documents
    (0 for a chunk whose row is gone, e.g. purged: never visible); ``visible`` is sorted. None
    lets the shard search run without a selector, which is faster and means the same thing.
    ``documents``, the sorted distinct values of ``document_of`` (precomputed per shard),
    answers the common all-visible case with one lookup per document instead of per chunk.
    """
    if documents is not None and documents.size and visible.size:
        pos = np.minimum(np.searchsorted(visible, documents), visible.size - 1)
        if bool((visible[pos] == documents).all()):
            return None
    mask = np.isin(document_of, visible, assume_unique=False)
    if mask.all():
        return None
    allowed: IdArray = chunk_ids[mask]
    return allowed


def allowed_ids_except(
    chunk_ids: IdArray, document_of: IdArray, documents: IdArray, hidden: IdArray
) -> IdArray | None:
    """Like ``allowed_ids``, from the few hidden documents instead of the many visible ones:
    the chunk ids of a shard whose document is not hidden and still exists (0 = its row is
    gone); None when that is every chunk of the shard. ``documents`` and ``hidden`` are
    sorted."""
    if hidden.size == 0 and (documents.size == 0 or documents[0] != 0):
        # The usual case, answered without a pass over the shard's documents: nothing hidden,
        # no orphaned chunk (0 would sort first).
        return None
    excluded = documents[np.isin(documents, hidden) | (documents == 0)]
    if excluded.size == 0:
        return None
    allowed: IdArray = chunk_ids[~np.isin(document_of, excluded)]
    return allowed


def present(chunk_ids: IdArray, wanted: IdArray) -> IdArray:
    """Those of ``wanted`` that are in ``chunk_ids`` (a shard's ids, sorted): a binary search
    per wanted id, so a few disabled chunks cost microseconds however large the shard."""
    if wanted.size == 0 or chunk_ids.size == 0:
        return wanted[:0]
    pos = np.minimum(np.searchsorted(chunk_ids, wanted), chunk_ids.size - 1)
    found: IdArray = wanted[chunk_ids[pos] == wanted]
    return found
