"""Search queries. `visible_documents_statement` is the one place search visibility lives."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Integer,
    Select,
    bindparam,
    false,
    or_,
    select,
    text,
    union,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import SQLCoreOperations

from app.crypto.chunks import open_chunk_headings, open_chunk_text
from app.kit.authz import SENSITIVITY_LEVELS
from app.kit.envelope import DataKey
from app.models import Chunk, Document, DocumentTag
from app.models.chunk import HIDDEN_SQL
from app.search.visibility import Visibility

IdArray = npt.NDArray[np.int64]


class HitRow(NamedTuple):
    # A tuple, not a dataclass: a search builds a few dozen per call and only uses some.
    chunk_id: int
    document_id: int
    title: str
    text: str
    heading_json: str | None
    sensitivity: str = ""

    @property
    def heading_path(self) -> tuple[str, ...]:
        try:
            value = json.loads(self.heading_json or "[]")
        except ValueError:
            return ()
        return tuple(str(part) for part in value) if isinstance(value, list) else ()


def one_of(column: SQLCoreOperations[str], values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN values`` written as equalities: unlike ``in_`` (an "expanding" parameter
    rendered anew at every execution), a statement built once with it is executed straight
    from SQLAlchemy's compiled cache. SQLite and PostgreSQL still use the column's index."""
    if not values:
        return false()
    return or_(*(column == value for value in values))


_NOT_READY = ("queued", "processing", "failed", "deleted")


class SearchRepository:
    def __init__(self) -> None:
        # The per-search statements of unfiltered searches, built once per set of sensitivity
        # levels with the tenant and chunk ids as bound parameters: constructing them anew
        # cost more Python time per search than the queries themselves take in SQLite.
        self._hidden_statements: dict[tuple[str, ...], CompoundSelect[Any]] = {}
        self._hit_statements: dict[tuple[str, ...], Select[Any]] = {}
        # Spelled as the partial index ix_chunks_hidden is, so the planner uses it.
        # (Parenthesised: next to the tenant's condition an OR would otherwise bind looser.)
        self._hidden_chunks = select(Chunk.id).where(
            Chunk.tenant_id == bindparam("tenant_id"), text(f"({HIDDEN_SQL})")
        )

    def visible_conditions(
        self, visibility: Visibility, *, tenant_parameter: bool = False
    ) -> list[ColumnElement[bool]]:
        """Conditions on ``Document`` that admit exactly the documents the visibility allows.
        With ``tenant_parameter`` the tenant is the bound parameter ``tenant_id``, to be given
        at execution, so that one statement can be built once and reused."""
        tenant: ColumnElement[int] | int = (
            bindparam("tenant_id", type_=Integer) if tenant_parameter else visibility.tenant_id
        )
        conditions: list[ColumnElement[bool]] = [
            Document.tenant_id == tenant,
            Document.status == "ready",
            Document.deleted_at.is_(None),
            one_of(Document.sensitivity, visibility.sensitivity),
        ]
        if visibility.tags:
            conditions.append(
                Document.id.in_(
                    select(DocumentTag.document_id).where(DocumentTag.tag.in_(visibility.tags))
                )
            )
        if visibility.document_ids is not None:
            conditions.append(Document.id.in_(visibility.document_ids))
        if visibility.uploaded_after is not None:
            conditions.append(Document.created_at >= visibility.uploaded_after)
        if visibility.uploaded_before is not None:
            conditions.append(Document.created_at < visibility.uploaded_before)
        return conditions

    def visible_documents_statement(self, visibility: Visibility) -> Select[int]:
        """Ids of the tenant's ready, not deleted documents the visibility admits."""
        return select(Document.id).where(*self.visible_conditions(visibility))

    # The reads of a search itself are synchronous, on a connection of the database's blocking
    # read engine: search runs them in the thread that ranks (see app.search.retriever).

    def visible_document_ids(self, connection: Connection, visibility: Visibility) -> IdArray:
        """Sorted ids of the documents a search under ``visibility`` may return."""
        if not visibility.sensitivity:
            return np.empty(0, dtype=np.int64)
        rows = connection.scalars(self.visible_documents_statement(visibility)).all()
        return np.unique(np.array(rows, dtype=np.int64))

    def hidden_document_ids(self, connection: Connection, visibility: Visibility) -> IdArray:
        """Sorted ids of the tenant's documents an unfiltered search must not return: not
        ready, soft-deleted, or above the caller's sensitivity. Usually a handful, where the
        visible ones may be a hundred thousand; three index lookups, no scan."""
        assert not visibility.filtered, "filtered searches list their visible documents"
        hidden_levels = tuple(s for s in SENSITIVITY_LEVELS if s not in visibility.sensitivity)
        statement = self._hidden_statements.get(hidden_levels)
        if statement is None:
            tenant = Document.tenant_id == bindparam("tenant_id")
            statements = [
                select(Document.id).where(tenant, one_of(Document.status, _NOT_READY)),
                select(Document.id).where(tenant, Document.deleted_at.is_not(None)),
            ]
            if hidden_levels:
                statements.append(
                    select(Document.id).where(tenant, one_of(Document.sensitivity, hidden_levels))
                )
            # One UNION, not three statements: each arm still uses its own (tenant_id, ...)
            # index, and a search pays one database round trip here instead of three.
            statement = self._hidden_statements.setdefault(hidden_levels, union(*statements))
        ids = connection.scalars(statement, {"tenant_id": visibility.tenant_id}).all()
        return np.unique(np.array(ids, dtype=np.int64))

    def hidden_chunk_ids(self, connection: Connection, tenant_id: int) -> IdArray:
        """Sorted ids of the tenant's chunks no search may return although their document is
        visible: disabled by a curator, or staged by a re-parse not yet swapped in. Usually
        none; a lookup in a partial index, whatever the tenant's size."""
        ids = connection.scalars(self._hidden_chunks, {"tenant_id": tenant_id}).all()
        return np.unique(np.array(ids, dtype=np.int64))

    # The two reads below serve the shard cache, which runs them while holding a tenant's
    # lock: they take a connection of the synchronous read engine, never of the async pool
    # that queued requests hold (see ShardCache).
    def chunk_documents(
        self, connection: Connection, tenant_id: int, shard_no: int
    ) -> tuple[IdArray, IdArray]:
        """(chunk ids, their document ids) of the chunks written into one shard, by chunk id."""
        rows = connection.execute(
            select(Chunk.id, Chunk.document_id)
            .where(Chunk.tenant_id == tenant_id, Chunk.shard_no == shard_no)
            .order_by(Chunk.id)
        ).all()
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        pairs = np.array(rows, dtype=np.int64)
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def hit_rows(
        self,
        connection: Connection,
        visibility: Visibility,
        chunk_ids: Sequence[int],
        key: DataKey | None = None,
    ) -> dict[int, HitRow]:
        """Text and title of the given chunks, for those still visible (checked again here);
        sealed text is opened with the tenant's `key`."""
        if not chunk_ids:
            return {}
        # One round trip, driven by the chunks' primary keys: the title comes from a
        # correlated subquery on the document's primary key that also applies every
        # visibility condition, so it is NULL (and the chunk dropped) for a document the
        # search may not show. A plain join may let the planner start from the tenant's
        # documents and scan them all for a handful of hits. The tenant is checked on the
        # rows, not in the outer WHERE: there SQLite prefers the (tenant_id, shard_no) index
        # to the primary key and walks the tenant's chunks.
        rows = connection.execute(
            self._hit_statement(visibility),
            {"tenant_id": visibility.tenant_id, "chunk_ids": list(chunk_ids)},
        )
        tenant_id = visibility.tenant_id
        return {
            chunk_id: HitRow(
                chunk_id,
                document_id,
                title,
                open_chunk_text(key, tenant_id, document_id, position, text),
                open_chunk_headings(key, tenant_id, document_id, position, heading_json)
                if heading_json is not None
                else None,
                sensitivity,
            )
            for (
                chunk_id,
                document_id,
                position,
                text,
                heading_json,
                row_tenant,
                title,
                sensitivity,
            ) in rows
            if row_tenant == tenant_id and title is not None
        }

    def _hit_statement(self, visibility: Visibility) -> Select[Any]:
        if visibility.filtered:
            return self._build_hit_statement(visibility)
        statement = self._hit_statements.get(visibility.sensitivity)
        if statement is None:
            statement = self._hit_statements.setdefault(
                visibility.sensitivity, self._build_hit_statement(visibility)
            )
        return statement

    def _build_hit_statement(self, visibility: Visibility) -> Select[Any]:
        # The tenant is a bound parameter, so one statement serves every tenant whose
        # searchers see the same sensitivity levels.
        conditions = self.visible_conditions(visibility, tenant_parameter=True)
        title = (
            select(Document.title)
            .where(Document.id == Chunk.document_id, *conditions)
            .correlate(Chunk)
            .scalar_subquery()
        )
        return select(
            Chunk.id,
            Chunk.document_id,
            Chunk.position,
            Chunk.text,
            Chunk.heading_path,
            Chunk.tenant_id,
            title.label("title"),
            # Shown beside each hit; the title's subquery already judged visibility.
            select(Document.sensitivity)
            .where(Document.id == Chunk.document_id)
            .correlate(Chunk)
            .scalar_subquery()
            .label("sensitivity"),
        ).where(
            Chunk.id.in_(bindparam("chunk_ids", expanding=True)),
            # Checked again here, like the document's visibility: a shard cached before a
            # chunk was disabled may still rank it.
            Chunk.enabled.is_(True),
            Chunk.staged.is_(False),
        )


search_repository = SearchRepository()
