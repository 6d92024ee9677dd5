"""Search API models (SPEC.md: ``POST /api/v1/tenants/{t}/search``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.documents.schemas import clean_tags
from app.kit.bounds import BoundedDatetime
from app.kit.public_ids import ChunkId, DocumentId, DocumentRef

SearchMode = Literal["hybrid", "bm25", "vector"]

MAX_QUERY_CHARS = 2000
MAX_TOP_K = 100
MAX_FILTER_DOCUMENTS = 1000

QueryText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS)
]


class SearchFilters(BaseModel):
    """Narrow the searchable documents; every given filter must hold."""

    model_config = ConfigDict(extra="forbid")

    # A document matches when it carries at least one of these tags.
    tags: list[str] | None = Field(default=None, max_length=32)
    document_ids: list[DocumentRef] | None = Field(default=None, max_length=MAX_FILTER_DOCUMENTS)
    # Upload time bounds: uploaded_after inclusive, uploaded_before exclusive. A time without
    # a zone is read as UTC; one outside app.kit.bounds' range is refused (422).
    uploaded_after: BoundedDatetime | None = None
    uploaded_before: BoundedDatetime | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else clean_tags(value)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText
    # Absent: the knowledge base's retrieval defaults (`…/settings`), 10 and hybrid unless set.
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    mode: SearchMode | None = None
    filters: SearchFilters | None = None


class SearchHit(BaseModel):
    chunk_id: ChunkId
    document_id: DocumentId
    title: str
    text: str
    score: float
    heading_path: list[str]
    # The document's level (public, internal, confidential): who else may find this passage.
    sensitivity: str


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    took_ms: float
