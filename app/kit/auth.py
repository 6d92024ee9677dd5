"""Authentication: turn `Authorization: Bearer <JWT or API key>` into a Principal (or 401)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api_keys.repository import api_key_repository
from app.kit.db import ReadSession
from app.kit.errors import NotAuthenticated, NotPermitted
from app.kit.principal import Principal
from app.kit.security import InvalidToken, decode_access_token, hash_api_key, looks_like_api_key
from app.kit.settings import Settings
from app.models.base import utcnow
from app.users.repository import user_repository

_bearer = HTTPBearer(auto_error=False)


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(settings_of)]


async def _principal(
    session: ReadSession,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated()
    token = credentials.credentials
    api_key_id: int | None = None
    token_version: int | None = None
    if looks_like_api_key(token):
        key = await api_key_repository.get_by_hash(session, hash_api_key(token))
        now = utcnow()
        if (
            key is None
            or key.revoked_at is not None
            or (key.expires_at is not None and key.expires_at <= now)
        ):
            raise NotAuthenticated("Invalid or revoked API key")
        user_id, api_key_id = key.user_id, key.id
    else:
        try:
            claims = decode_access_token(
                token, secret=settings.secret("jwt_secret"), algorithm=settings.jwt_algorithm
            )
        except InvalidToken as exc:
            raise NotAuthenticated("Invalid or expired token") from exc
        user_id, token_version = claims.user_id, claims.version
    user = await user_repository.get(session, user_id)
    # Checked on every request, so deactivation and a password change (which bumps
    # token_version) revoke outstanding tokens at once, in every process.
    if user is None or not user.is_active:
        raise NotAuthenticated("Invalid or expired token")
    if token_version is not None and token_version != user.token_version:
        raise NotAuthenticated("Invalid or expired token")
    return Principal(
        user_id=user.id,
        username=user.username,
        is_platform_admin=user.is_platform_admin,
        api_key_id=api_key_id,
    )


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
