"""The browser's session: a cookie carrying the same JWT the API issues, and CSRF tokens.

Invariants:
- The session cookie is HttpOnly (no script reads it), SameSite=Lax (other sites' forms and
  fetches do not carry it on POST) and Secure when the page was served over HTTPS.
- Every state-changing request authenticated by the cookie carries a CSRF token: an HMAC of
  the session cookie under the JWT secret, rendered into the page (a `<meta>` for fetch, a
  hidden field for forms). Another site can neither read the page nor compute the HMAC, so it
  cannot forge the token; SameSite is a second, independent wall.
- Before sign-in, a random `pre-session` cookie plays the session's part, so the sign-in
  form is CSRF-protected too (no login CSRF).
- Bearer tokens are untouched: a request with an Authorization header is never looked at here.
"""

from __future__ import annotations

import hmac
import json
import secrets

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.kit.errors import error_body
from app.kit.security import keyed_digest
from app.kit.settings import Settings

SESSION_COOKIE = "cairn_session"
PRESESSION_COOKIE = "cairn_pre"
LANG_COOKIE = "cairn_lang"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The JSON API the page's script calls with the cookie. /v1 (OpenAI-compatible) stays
# bearer-only: its clients are programs, never this page.
BRIDGED_PREFIX = "/api/"
# Fetch metadata the browser sends: the page's own script is same-origin; "none" is the user
# typing or bookmarking an API URL. Clients that send no such header are not browsers.
SAME_SITE_FETCH = frozenset({"same-origin", "none"})


def csrf_token(settings: Settings, cookie_value: str) -> str:
    """The CSRF token bound to one session (or pre-session) cookie."""
    return keyed_digest(settings.secret("jwt_secret"), f"csrf:{cookie_value}")


def csrf_valid(settings: Settings, cookie_value: str | None, token: str | None) -> bool:
    """Whether `token` is the CSRF token of this cookie (constant-time)."""
    if not cookie_value or not token:
        return False
    return hmac.compare_digest(csrf_token(settings, cookie_value), token)


def new_presession() -> str:
    """A random pre-session value for the sign-in form's CSRF token."""
    return secrets.token_urlsafe(32)


def is_https(connection: HTTPConnection) -> bool:
    """Whether the page was served over HTTPS: the connection's scheme, or X-Forwarded-Proto
    from a configured proxy only (app/kit/forwarded.py sets the scope's scheme)."""
    return connection.url.scheme == "https"


def set_cookie(
    response: Response,
    connection: HTTPConnection,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    http_only: bool = True,
) -> None:
    """Set a cookie with the session's flags."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=http_only,
        samesite="lax",
        secure=is_https(connection),
    )


def clear_cookie(response: Response, connection: HTTPConnection, name: str) -> None:
    """Expire a cookie."""
    response.delete_cookie(
        name, path="/", httponly=True, samesite="lax", secure=is_https(connection)
    )


class SessionBridge:
    """Let the page's script call /api/ with the session cookie: CSRF-check unsafe methods,
    then present the cookie's JWT as the bearer credential, so the API's own authentication,
    authorisation and audit apply unchanged. Plain ASGI, so streamed answers stay streamed."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(BRIDGED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "authorization" in headers:
            # A bearer caller: exactly the API as before, cookie or not.
            await self.app(scope, receive, send)
            return
        cookie = HTTPConnection(scope).cookies.get(SESSION_COOKIE)
        if not cookie or headers.get("sec-fetch-site", "same-origin") not in SAME_SITE_FETCH:
            # No session, or another site navigated here (SameSite=Lax still sends the cookie
            # on a top-level GET): the API sees an anonymous request.
            await self.app(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS and not csrf_valid(
            self.settings, cookie, headers.get(CSRF_HEADER)
        ):
            body = json.dumps(
                error_body("csrf_failed", "Missing or invalid CSRF token; reload the page")
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        bridged = dict(scope)
        bridged["headers"] = list(scope["headers"])
        MutableHeaders(scope=bridged)["authorization"] = f"Bearer {cookie}"
        await self.app(bridged, receive, send)
