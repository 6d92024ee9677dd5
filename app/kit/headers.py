"""Security headers (a strict Content-Security-Policy included) on every response;
`Cache-Control: no-store` on every API response; the `Content-Disposition` of a download.

Every /api and /v1 response is private to its caller (tokens, documents, answers, audit
entries), errors and event streams included, so no browser or proxy may keep a copy.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    # Never guess a type: an uploaded file's bytes must not run as HTML or script.
    "X-Content-Type-Options": "nosniff",
    # Tenant slugs and document ids in URLs stay out of other sites' logs.
    "Referrer-Policy": "no-referrer",
    # No page of Cairn's (the API docs included) can be framed for clickjacking.
    "X-Frame-Options": "DENY",
}
PRIVATE_PREFIXES = ("/api/", "/v1/")
# The web admin's pages: scripts and styles only from Cairn itself (no inline script, no
# eval), nothing framed, nothing framing it, forms posting only back to Cairn.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# The API docs pages load Swagger/ReDoc from a CDN with inline script (only when api_docs is
# on); every other response gets the policy.
CSP_EXEMPT = ("/docs", "/redoc")


def _is_private(path: str) -> bool:
    return path in ("/api", "/v1") or path.startswith(PRIVATE_PREFIXES)


class SecurityHeaders:
    """Add SECURITY_HEADERS to every HTTP response and no-store to API responses.

    Plain ASGI, like MetricsMiddleware (see there): BaseHTTPMiddleware would hide a client's
    disconnect from the streaming chat endpoints.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        private = _is_private(path)
        with_csp = not path.startswith(CSP_EXEMPT)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if with_csp:
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                if private:
                    # Replaces any weaker directive (sse-starlette sets no-store too).
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def attachment(filename: str) -> str:
    """A `Content-Disposition` value that saves the response as `filename` (RFC 6266): an
    ASCII `filename` for old clients (anything else, quotes and backslashes too, becomes "_")
    and the exact name, percent-encoded UTF-8, as `filename*`."""
    name = "".join(c for c in filename if c.isprintable()).strip() or "download"
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
