"""Chat API models (SPEC.md: ``POST /api/v1/tenants/{t}/chat``) and the session views."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.chat.states import AnswerState
from app.kit.bounds import MAX_REQUESTED_TOKENS, MAX_TOP_K
from app.kit.public_ids import ChatMessageId, ChatSessionId, ChatSessionRef, ChunkId, DocumentId

# The hard ceiling; `chat.max_question_chars` may set a lower one.
MAX_QUESTION_CHARS = 32_000
# A session's title (the column's width) and what a search of your sessions may ask for.
MAX_TITLE_CHARS = 200
MAX_SESSION_QUERY_CHARS = 200
# A comment given with a rating.
MAX_FEEDBACK_COMMENT_CHARS = 2000

Rating = Literal["up", "down"]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    # Continue this session (yours, in this tenant); omitted: a new session.
    session_id: ChatSessionRef | None = None
    # Passages retrieved into the prompt; default and ceiling from configuration.
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    stream: bool = False
    # Fewer new tokens than the configured maximum (never more).
    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_REQUESTED_TOKENS)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("question must not be blank")
        return value


class CitationOut(BaseModel):
    # The [n] the answer uses for this passage.
    ref: int
    document_id: DocumentId
    chunk_id: ChunkId
    title: str
    snippet: str
    # The passage's sentence(s) that support the answer ("" when none was found).
    quote: str = ""
    # Words of the answer (of the question, for a quoted answer) as the quote writes them:
    # what a reader's eye should find in it. Empty for turns stored before they were kept.
    highlight: list[str] = Field(default_factory=list)


# What the faithfulness check did (README, "How answers are checked"): supported as
# generated; regenerated with a stricter instruction; replaced by a quote of the documents;
# unsupported (kept, not grounded, with a note); a refusal; or not checked.
CheckOutcome = Literal[
    "supported", "regenerated", "quoted", "dropped", "unsupported", "refused", "unchecked"
]


class ChatResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    # None only for an answer nobody reads (its client went away before it was stored): a
    # made-up id would name a session that does not exist.
    session_id: ChatSessionId | None
    # The stored answer (what feedback names); None when nothing was stored.
    message_id: ChatMessageId | None = None
    finish_reason: Literal["stop", "length"]
    # True only when the answer was checked against the passages it cites (or quotes them);
    # false when nothing relevant was found, the model declined, or the check failed.
    grounded: bool
    check: CheckOutcome = "unchecked"
    # What the reader is told the answer is (app/chat/states.py; README "How answers are
    # checked"): the model's checked words, the documents' own sentence instead, nothing
    # found, or (only when the check is off or cannot quote) the model's words unverified.
    state: AnswerState = "unverified"
    # Why the answer is not the model's own text or is not trusted, for the reader.
    note: str | None = None


class SessionOut(BaseModel):
    id: ChatSessionId
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int


class SessionRename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("title must not be blank")
        return value


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: Rating
    comment: str | None = Field(default=None, max_length=MAX_FEEDBACK_COMMENT_CHARS)

    @field_validator("comment")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class FeedbackOut(BaseModel):
    rating: Rating
    comment: str | None
    updated_at: datetime


class MessageOut(BaseModel):
    # The message's id: an answer's names it for feedback.
    id: ChatMessageId
    role: Literal["user", "assistant"]
    content: str
    created_at: datetime
    citations: list[CitationOut]
    # True when the answer is withheld because a document it was written from (cited or
    # only in its prompt) is no longer visible to you (deleted, or above your level now).
    withheld: bool = False
    # An answer's `grounded`, `check` and `note` as its ChatResponse gave them; null for
    # questions, withheld answers and answers stored before these were kept.
    grounded: bool | None = None
    check: CheckOutcome | None = None
    state: AnswerState | None = None
    note: str | None = None
    # Your rating of this answer, if you gave one (answers only).
    feedback: FeedbackOut | None = None


class SessionDetail(SessionOut):
    messages: list[MessageOut]
