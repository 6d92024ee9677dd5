"""Prometheus metrics. Labels use route templates, never raw paths (no tenant slugs, bounded)."""

from __future__ import annotations

import hmac
import time

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.errors import NotAuthenticated

REQUESTS = Counter("cairn_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "cairn_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _route_template(scope: Scope) -> str:
    # The router records the matched route in the (shared) scope once routing happened.
    return str(getattr(scope.get("route"), "path", "unmatched"))


class MetricsMiddleware:
    """Count and time every request.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps
    `receive` in a way that hides a client's disconnect from `Request.is_disconnected()`,
    which the chat API relies on to stop generating for a client that went away.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = _route_template(scope)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)


def require_metrics_token(expected: str | None, authorization: str | None) -> None:
    """With a configured metrics token (non-empty), the request must carry it as a bearer token."""
    if not expected:
        return
    scheme, _, token = (authorization or "").partition(" ")
    # Constant-time comparison: response timing must not reveal how much of a guess matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise NotAuthenticated("A valid metrics token is required")


def metrics_response() -> Response:
    """The Prometheus exposition."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
