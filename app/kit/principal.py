"""Who is calling: resolved once per request from the bearer credential."""

from __future__ import annotations

from dataclasses import dataclass


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
