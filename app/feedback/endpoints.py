from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from app.chat.adapter import feedback_out, stored_outcome
from app.chat.endpoints import ChatAccess
from app.chat.schemas import FeedbackIn, FeedbackOut
from app.chat.states import state_of
from app.feedback.schemas import RatedAnswer, RatedPassage, RatingFilter
from app.feedback.service import RatedEntry, feedback_service
from app.kit.authz import Authorizer, TenantAccess
from app.kit.db import ReadSession, Session
from app.kit.pagination import Page, Pagination
from app.kit.public_ids import ChatMessageRef
from app.search.visibility import Visibility

router = APIRouter(prefix="/api/v1/tenants/{tenant}", tags=["feedback"])

FeedbackRead = Annotated[TenantAccess, Depends(Authorizer("feedback", "read"))]


@router.put("/chat/messages/{message_id}/feedback", response_model=FeedbackOut)
async def rate_answer(
    message_id: ChatMessageRef, data: FeedbackIn, access: ChatAccess, session: Session
) -> FeedbackOut:
    """Rate one of your answers, thumbs up or down with an optional comment (replaces your
    earlier rating of it)."""
    row = await feedback_service.rate(
        session,
        access.principal,
        tenant_id=access.tenant_id,
        message_id=message_id,
        rating=data.rating,
        comment=data.comment,
    )
    shown = feedback_out(row)
    assert shown is not None
    return shown


@router.delete("/chat/messages/{message_id}/feedback", status_code=204)
async def unrate_answer(
    message_id: ChatMessageRef, access: ChatAccess, session: Session
) -> Response:
    """Take back your rating of one of your answers."""
    await feedback_service.unrate(
        session, access.principal, tenant_id=access.tenant_id, message_id=message_id
    )
    return Response(status_code=204)


def rated_answer(entry: RatedEntry) -> RatedAnswer:
    """A rated answer as the admin reads it (withheld: no text, passages or check)."""
    message = entry.stored.message
    shown = not entry.withheld
    rating = feedback_out(entry.feedback)
    assert rating is not None
    return RatedAnswer(
        message_id=message.id,
        question=entry.question,
        answer=entry.answer,
        withheld=entry.withheld,
        grounded=message.grounded if shown else None,
        check=stored_outcome(message.check_outcome) if shown else None,
        state=state_of(message.check_outcome, message.grounded) if shown else None,
        note=message.note if shown else None,
        passages=[
            RatedPassage(
                ref=c.ref,
                document_id=c.document_id,
                title=c.title,
                quote=c.quote,
                snippet=c.snippet,
            )
            for c in entry.stored.citations
        ]
        if shown
        else [],
        rating=rating.rating,
        comment=rating.comment,
        answered_at=message.created_at,
        rated_at=rating.updated_at,
    )


@router.get("/feedback", response_model=Page[RatedAnswer])
async def list_feedback(
    access: FeedbackRead,
    session: ReadSession,
    page: Pagination,
    rating: Annotated[RatingFilter | None, Query()] = None,
) -> Page[RatedAnswer]:
    """The tenant's rated answers, most recently rated first (tenant admin): each with its
    question, answer, check, cited passages, rating and comment. These are the tenant's data;
    the asker is not named."""
    entries, total = await feedback_service.rated_answers(
        session, Visibility.of(access), rating=rating, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[rated_answer(e) for e in entries],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
