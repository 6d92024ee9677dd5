"""Answer feedback: what a tenant admin reads of the tenant's rated answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from app.chat.schemas import CheckOutcome, Rating
from app.chat.states import AnswerState
from app.kit.public_ids import ChatMessageId, DocumentId

RatingFilter = Literal["up", "down"]


class RatedPassage(BaseModel):
    ref: int
    document_id: DocumentId
    title: str
    # The passage's sentence(s) that support the answer ("" when none was found).
    quote: str
    snippet: str


class RatedAnswer(BaseModel):
    message_id: ChatMessageId
    # The question the answer answered ("" when it is no longer stored).
    question: str
    answer: str
    # The answer was written from a document the reader can no longer see: its text, passages
    # and check are not shown (app/chat/service.py).
    withheld: bool
    grounded: bool | None
    check: CheckOutcome | None
    # What the reader was told the answer is (app/chat/states.py).
    state: AnswerState | None
    note: str | None
    passages: list[RatedPassage]
    rating: Rating
    comment: str | None
    answered_at: datetime
    rated_at: datetime
