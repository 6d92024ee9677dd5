from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response
from pydantic import BaseModel

from app.auth.service import auth_service
from app.kit.auth import AppSettings, CurrentPrincipal
from app.kit.db import Session
from app.kit.ratelimit import ClientAddress, SignInThrottle

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/token", response_model=Token)
async def issue_token(
    username: Annotated[str, Form(max_length=256)],
    password: Annotated[str, Form(max_length=1024)],
    session: Session,
    settings: AppSettings,
    throttle: SignInThrottle,
    address: ClientAddress,
) -> Token:
    token = await auth_service.login(
        session, settings, throttle, username=username, password=password, address=address
    )
    return Token(access_token=token, expires_in=settings.jwt_ttl_minutes * 60)


@router.post("/signout", status_code=204)
async def signout(principal: CurrentPrincipal, session: Session) -> Response:
    """End this token's (or this cookie's) sign-in session on the server."""
    await auth_service.signout(session, principal)
    return Response(status_code=204)
