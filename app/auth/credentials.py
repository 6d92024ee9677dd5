"""Bearer credentials — a JWT or an API key — checked against the database on every request.

Held by the app's container (app/container.py), so that the request-level dependency in
app/kit/auth.py needs no domain import."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.repository import api_key_repository
from app.auth.repository import auth_session_repository
from app.kit.errors import NotAuthenticated
from app.kit.principal import Principal
from app.kit.security import InvalidToken, decode_access_token, hash_api_key, looks_like_api_key
from app.kit.settings import Settings
from app.models import User
from app.models.base import utcnow
from app.users.repository import user_repository


class BearerCredentials:
    async def principal(self, session: AsyncSession, settings: Settings, token: str) -> Principal:
        """The caller behind a bearer token; 401 for anything not currently valid."""
        if looks_like_api_key(token):
            key = await api_key_repository.get_by_hash(session, hash_api_key(token))
            now = utcnow()
            if (
                key is None
                or key.revoked_at is not None
                or (key.expires_at is not None and key.expires_at <= now)
            ):
                raise NotAuthenticated("Invalid or revoked API key")
            user = await user_repository.get(session, key.user_id)
            if user is None or not user.is_active:
                raise NotAuthenticated("Invalid or revoked API key")
            return self._principal(user, api_key_id=key.id)
        try:
            claims = decode_access_token(
                token, secret=settings.secret("jwt_secret"), algorithm=settings.jwt_algorithm
            )
        except InvalidToken as exc:
            raise NotAuthenticated("Invalid or expired token") from exc
        # The token names a sign-in session and the account's random subject, never a row
        # number: signing out, a password change or reset and deactivation end sessions, and
        # an erased account's subject matches no one, whatever ids come after it.
        found = await auth_session_repository.live(
            session, handle=claims.session, subject=claims.subject, now=utcnow()
        )
        if found is None:
            raise NotAuthenticated("Invalid or expired token")
        signed_in, user = found
        if not user.is_active or claims.version != user.token_version:
            raise NotAuthenticated("Invalid or expired token")
        return self._principal(user, session_id=signed_in.id)

    def _principal(
        self, user: User, *, api_key_id: int | None = None, session_id: int | None = None
    ) -> Principal:
        return Principal(
            user_id=user.id,
            username=user.username,
            is_platform_admin=user.is_platform_admin,
            api_key_id=api_key_id,
            session_id=session_id,
        )


bearer_credentials = BearerCredentials()
