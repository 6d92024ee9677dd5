"""A knowledge base's own settings (SPEC.md "Curation": `GET|PATCH …/settings`)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.kit.public_ids import DocumentRef, JobId
from app.kit.settings import ChunkTemplate
from app.search.index.tokenize import StemmerName
from app.search.schemas import MAX_TOP_K, SearchMode

# Token budgets a knowledge base may choose (count_tokens units, ingest/chunking.py): below
# 32 a chunk holds half a sentence; above 2048 the bundled embedders truncate it.
MIN_CHUNK_SIZE = 32
MAX_CHUNK_SIZE = 2048
MAX_SEPARATORS = 8
MAX_WEIGHT = 10.0
MAX_SCORE = 1000.0

Separator = Annotated[str, StringConstraints(min_length=1, max_length=16)]


class ChunkingSettings(BaseModel):
    """How documents are cut: token budget, overlap, extra separators and a template."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)
    overlap: int = Field(ge=0, le=MAX_CHUNK_SIZE // 2)
    separators: list[Separator] = Field(max_length=MAX_SEPARATORS)
    template: ChunkTemplate

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.overlap * 2 > self.size:
            raise ValueError("overlap must be at most half of size")
        if len(set(self.separators)) != len(self.separators):
            raise ValueError("separators must be distinct")
        return self


class FusionWeights(BaseModel):
    """How much each retriever counts in hybrid search."""

    model_config = ConfigDict(extra="forbid")

    bm25: float = Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)
    vector: float = Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)

    @model_validator(mode="after")
    def _not_both_zero(self) -> Self:
        if self.bm25 == 0 and self.vector == 0:
            raise ValueError("at least one of the weights must be above 0")
        return self


class RetrievalSettings(BaseModel):
    """What a search of this knowledge base does when the request does not say."""

    model_config = ConfigDict(extra="forbid")

    mode: SearchMode
    top_k: int = Field(ge=1, le=MAX_TOP_K)
    weights: FusionWeights
    # Hits scoring below are not returned (None: all are). Scores depend on the mode: a
    # cosine similarity (vector), a BM25 score (bm25) or a fused z-score (hybrid).
    min_score: float | None = Field(ge=-MAX_SCORE, le=MAX_SCORE, allow_inf_nan=False)


class BM25Settings(BaseModel):
    """How the keyword (BM25) index turns text into terms. Chinese is segmented with jieba
    whatever the stemmer."""

    model_config = ConfigDict(extra="forbid")

    # English Snowball stemming ("running" finds "runs"), or words matched as written.
    stemmer: StemmerName


class KnowledgeBaseSettings(BaseModel):
    chunking: ChunkingSettings
    retrieval: RetrievalSettings
    bm25: BM25Settings
    # Which keys the knowledge base set itself; the others follow the server's configuration.
    overridden: list[str] = Field(default_factory=list)
    # The keyword-index rebuild under way (queued or running), if any: a PATCH that changed
    # `bm25.stemmer` returns the one it queued. Its progress: GET …/jobs/{id}.
    rebuild_job_id: JobId | None = None


class ChunkingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int | None = Field(default=None, ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)
    overlap: int | None = Field(default=None, ge=0, le=MAX_CHUNK_SIZE // 2)
    separators: list[Separator] | None = Field(default=None, max_length=MAX_SEPARATORS)
    template: ChunkTemplate | None = None


class RetrievalUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: SearchMode | None = None
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    weights: FusionWeights | None = None
    min_score: float | None = Field(default=None, ge=-MAX_SCORE, le=MAX_SCORE, allow_inf_nan=False)


class BM25Update(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stemmer: StemmerName | None = None


class KnowledgeBaseSettingsUpdate(BaseModel):
    """Only the keys given change; `reset` lists keys (`chunking.size`, …) to return to the
    server's default."""

    model_config = ConfigDict(extra="forbid")

    chunking: ChunkingUpdate | None = None
    retrieval: RetrievalUpdate | None = None
    bm25: BM25Update | None = None
    reset: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=16
    )


class ReparseRequest(BaseModel):
    """Re-parse documents with the knowledge base's current chunking."""

    model_config = ConfigDict(extra="forbid")

    # None: every ready document of the knowledge base.
    document_ids: list[DocumentRef] | None = Field(default=None, min_length=1, max_length=10_000)
    # Keep chunks a person edited or added, and keep disabled text disabled; otherwise the
    # new chunks come from the file alone.
    keep_curated: bool = False


class JobRead(BaseModel):
    """A background job's progress, as the page polls it."""

    id: JobId
    kind: str
    status: str
    done: int
    total: int
    error: str | None
