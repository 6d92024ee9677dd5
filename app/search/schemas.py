"""Search API models (SPEC.md: ``POST /api/v1/tenants/{t}/search``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.documents.schemas import clean_tags

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
    document_ids: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, max_length=MAX_FILTER_DOCUMENTS
    )
    # Upload time bounds: uploaded_after inclusive, uploaded_before exclusive. A time without
    # a zone is read as UTC.
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else clean_tags(value)

    @field_validator("uploaded_after", "uploaded_before")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    mode: SearchMode = "hybrid"
    filters: SearchFilters | None = None


class SearchHit(BaseModel):
    chunk_id: int
    document_id: int
    title: str
    text: str
    score: float
    heading_path: list[str]


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    took_ms: float
