"""Password hashing (argon2), JWTs (PyJWT) and API-key material."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as one with a wrong password,
# so response time does not reveal which usernames exist.
_dummy_hash = _hasher.hash(secrets.token_urlsafe(16))


def configure_password_hashing(*, time_cost: int, memory_kib: int) -> None:
    """Set the argon2id cost for new hashes (existing hashes carry their own parameters)."""
    global _hasher, _dummy_hash
    if (_hasher.time_cost, _hasher.memory_cost) == (time_cost, memory_kib):
        return
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
    _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))


API_KEY_PREFIX = "cairn_"


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches; constant work whether or not the user exists."""
    try:
        return _hasher.verify(password_hash or _dummy_hash, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TokenClaims:
    # The account's random subject (users.subject), never its row number.
    subject: str
    # The sign-in session's handle (auth_sessions.handle): the token dies with that session.
    session: str
    expires_at: datetime
    # The user's token_version when the token was issued.
    version: int = 0


class InvalidToken(Exception):
    """The token is malformed, tampered with or expired."""


def create_access_token(
    subject: str,
    session: str,
    *,
    secret: str,
    algorithm: str,
    ttl: timedelta,
    now: datetime | None = None,
    version: int = 0,
) -> str:
    """A signed JWT for the account `subject` and sign-in session `session`, expiring after
    `ttl`, valid while the user's token_version is `version` and the session has not ended."""
    issued = now or datetime.now(UTC)
    payload = {
        "sub": subject,
        "sid": session,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "typ": "access",
        "ver": version,
    }
    return jwt.encode(payload, secret, algorithm=algorithm)


def decode_access_token(token: str, *, secret: str, algorithm: str) -> TokenClaims:
    """The token's claims; raises InvalidToken for anything but a valid, unexpired access token.

    Tokens issued before sessions existed (an integer `sub`, no `sid`) are refused: they name
    a row number, which is exactly what must never identify an account."""
    try:
        # Pinning the algorithm list blocks "alg: none" and key-confusion attacks.
        payload = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            options={"require": ["exp", "sub", "iat", "sid"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if payload.get("typ") != "access":
        raise InvalidToken("not an access token")
    subject, session, version = payload["sub"], payload["sid"], payload.get("ver", 0)
    if not isinstance(subject, str) or not isinstance(session, str):
        raise InvalidToken("bad subject or session")
    if not (0 < len(subject) <= 64 and 0 < len(session) <= 64):
        raise InvalidToken("bad subject or session")
    if type(version) is not int:
        raise InvalidToken("bad version")
    return TokenClaims(
        subject=subject,
        session=session,
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        version=version,
    )


def generate_api_key() -> str:
    """A new random API key (256 bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of the key. Keys are 256-bit random, so a fast hash is safe and lookup stays O(1)."""
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    """Whether a bearer token is an API key rather than a JWT."""
    return token.startswith(API_KEY_PREFIX)


def keyed_digest(secret: str, message: str) -> str:
    """HMAC-SHA256 hex digest."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
