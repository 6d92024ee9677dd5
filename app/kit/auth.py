"""Authentication: turn `Authorization: Bearer <JWT or API key>` into a Principal (or 401)."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.db import ReadSession
from app.kit.errors import NotAuthenticated, NotPermitted
from app.kit.principal import Principal
from app.kit.request_context import note_user
from app.kit.settings import Settings

_bearer = HTTPBearer(auto_error=False)


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.container.settings
    return settings


AppSettings = Annotated[Settings, Depends(settings_of)]


class CredentialResolver(Protocol):
    """Turns a bearer token into the caller (app/auth/credentials.py is the one in use)."""

    async def principal(
        self, session: AsyncSession, settings: Settings, token: str
    ) -> Principal: ...


async def _principal(
    request: Request,
    session: ReadSession,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated()
    resolver: CredentialResolver = request.app.state.container.credentials
    principal = await resolver.principal(session, settings, credentials.credentials)
    note_user(principal.user_id)  # for the request's access log line
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


async def _interactive_principal(principal: CurrentPrincipal) -> Principal:
    if principal.api_key_id is not None:
        raise NotPermitted(
            "This needs an interactive sign-in (a token from /api/v1/auth/token), not an API key",
            code="interactive_sign_in_required",
        )
    return principal


# Managing credentials (API keys, the password) needs a person who signed in with a password:
# a leaked API key must not be able to mint, list or revoke keys, or change the password.
InteractivePrincipal = Annotated[Principal, Depends(_interactive_principal)]
