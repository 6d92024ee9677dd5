"""The tenant admin's Feedback page: the tenant's rated answers in words, server-rendered from
the same service as `GET /api/v1/tenants/{t}/feedback` (question, answer, what the check made
of it, cited passages, rating and comment), filtered by rating, paged."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.chat.states import state_of
from app.feedback.service import feedback_service
from app.kit.authz import CurrentEnforcer
from app.kit.bounds import MAX_OFFSET
from app.kit.db import ReadSession
from app.search.visibility import Visibility
from app.web.routes import SignedIn, _in_tenant

router = APIRouter(include_in_schema=False)

FEEDBACK_PER_PAGE = 20


@router.get("/t/{tenant}/feedback")
async def feedback_page(
    tenant: str,
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
    rating: Annotated[Literal["up", "down"] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    await _in_tenant(page, session, enforcer, tenant, "feedback", "read")
    assert page.access is not None
    entries, total = await feedback_service.rated_answers(
        session,
        Visibility.of(page.access),
        rating=rating,
        limit=FEEDBACK_PER_PAGE,
        offset=offset,
    )
    base = f"/t/{tenant}/feedback"

    def href(at: int) -> str:
        params = {k: v for k, v in {"rating": rating, "offset": at}.items() if v}
        return base + ("?" + urlencode(params) if params else "")

    return page.render(
        "feedback.html",
        section="feedback",
        entries=entries,
        total=total,
        rating=rating or "",
        prev_href=href(max(offset - FEEDBACK_PER_PAGE, 0)) if offset > 0 else None,
        next_href=href(offset + FEEDBACK_PER_PAGE) if offset + FEEDBACK_PER_PAGE < total else None,
        first=offset + 1 if entries else 0,
        last=offset + len(entries),
        state_of=state_of,
    )
