"""The subset of OpenAI's chat-completions wire format that chat clients send and read."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.chat.schemas import CheckOutcome, CitationOut
from app.chat.states import AnswerState
from app.kit.bounds import MAX_REQUESTED_TOKENS, MAX_TOP_K

MAX_MESSAGES = 500


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    # Clients send more (name, tool_calls, ...): accepted and ignored.
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text (text parts joined); other part types are refused earlier."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    def has_non_text(self) -> bool:
        return isinstance(self.content, list) and any(p.type != "text" for p in self.content)


class ChatCompletionRequest(BaseModel):
    # Sampling knobs Cairn does not use (penalties, seed, user, ...) are accepted and ignored,
    # as OpenAI-compatible servers commonly do, so clients work unchanged.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    # More than the configured maximum is accepted and capped, as OpenAI-compatible servers do.
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_REQUESTED_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_REQUESTED_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # OpenAI's own ceiling; Cairn answers only n = 1 (400 otherwise).
    n: int | None = Field(default=None, ge=1, le=128)
    # Cairn's extension: passages retrieved into the prompt.
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "cairn"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    # Cairn's extensions: the passages the numbered references in the text point to, and
    # what the reader is told the answer is (app/chat/states.py) with the check's outcome.
    citations: list[CitationOut]
    state: AnswerState
    check: CheckOutcome


def chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    citations: list[CitationOut] | None = None,
    state: AnswerState | None = None,
    check: CheckOutcome | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` of a streamed answer."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if citations is not None:
        body["citations"] = [c.model_dump() for c in citations]
    if state is not None:
        body["state"] = state
    if check is not None:
        body["check"] = check
    return body
