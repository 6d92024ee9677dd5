"""Chunk curation API models (SPEC.md "Curation": `…/documents/{id}/chunks`)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.kit.public_ids import ChunkId

# A chunk a person writes is one passage: longer text belongs in a document.
MAX_CHUNK_CHARS = 8000
MAX_HEADINGS = 8

ChunkOrigin = Literal["parsed", "edited", "added"]
ChunkText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CHUNK_CHARS)
]
Heading = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ChunkRead(BaseModel):
    id: ChunkId
    position: int
    headings: list[str]
    text: str
    enabled: bool
    # Written by a person (edited, or added by hand); `origin` says which.
    edited: bool
    origin: ChunkOrigin


class ChunkUpdate(BaseModel):
    """New text (re-embedded and re-indexed before the response), or enabled on/off."""

    model_config = ConfigDict(extra="forbid")

    text: ChunkText | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.text is None and self.enabled is None:
            raise ValueError("give text, enabled, or both")
        return self


class ChunkCreate(BaseModel):
    """A chunk written by hand, added after the document's others."""

    model_config = ConfigDict(extra="forbid")

    text: ChunkText
    headings: list[Heading] = Field(default_factory=list, max_length=MAX_HEADINGS)
