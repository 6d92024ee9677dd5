"""Who is calling: resolved once per request from the bearer credential."""

from __future__ import annotations

from dataclasses import dataclass

from app.kit.actor import UserActor


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    is_platform_admin: bool
    # Set when the request authenticated with an API key rather than a JWT.
    api_key_id: int | None = None
    # Set when the request authenticated with a token or cookie: its sign-in session, which
    # signing out ends.
    session_id: int | None = None

    @property
    def actor(self) -> UserActor:
        """The person behind the request, as the audit log names them."""
        return UserActor(self.user_id, self.username)
