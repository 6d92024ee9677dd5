"""The request being served: its id, who called and in which tenant, for logs, error bodies and
audit entries.

`RequestContextMiddleware` is plain ASGI and the outermost middleware, so every response (a 413
from the body limit and CORS answers included) carries `X-Request-ID` and every request writes
one access line. The context lives in a contextvar holding a mutable object: dependencies fill
in the caller (`note_user`) and the middleware, which set the variable, reads it back after the
app returned, even where the app ran parts of the request in a copied context (threads, task
groups). Outside a request (CLI, jobs started at start-up) there is no context.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.public_ids import IdKind, encode_id

access_logger = logging.getLogger("cairn.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only when it is a plain token: it goes into logs and the audit chain.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Tenant slugs are validated by the routes; a raw path value is only cut short for the log.
_MAX_TENANT_CHARS = 64
# Where the id is kept in the ASGI scope for the one handler that runs outside this middleware
# (Starlette's ServerErrorMiddleware renders unhandled errors after the context was reset).
_SCOPE_KEY = "cairn.request_id"


@dataclass
class RequestContext:
    request_id: str
    user_id: int | None = None


_current: ContextVar[RequestContext | None] = ContextVar("cairn_request", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    context = _current.get()
    return context.request_id if context else None


def note_user(user_id: int) -> None:
    """Record the authenticated caller of the current request (no-op outside a request)."""
    context = _current.get()
    if context is not None:
        context.user_id = user_id


def request_id_of(scope: Scope) -> str | None:
    """The id the middleware gave this request (also after its context was reset)."""
    value = scope.get(_SCOPE_KEY)
    return value if isinstance(value, str) else None


def accepted_request_id(value: str | None) -> str:
    """The client's `X-Request-ID` when it is a sane token, otherwise a fresh one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's path template ("unmatched" before or without routing): a bounded
    label, never the raw path with its tenant slugs and ids."""
    # The router records the matched route in the (shared) scope once routing happened.
    return str(getattr(scope.get("route"), "path", "unmatched"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class RequestContextMiddleware:
    """Give each HTTP request an id, echo it as `X-Request-ID`, log one line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(accepted_request_id(_header(scope, b"x-request-id")))
        scope[_SCOPE_KEY] = context.request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = context.request_id
            await send(message)

        token = _current.set(context)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            _log_request(scope, context, status, time.perf_counter() - started)


def _log_request(scope: Scope, context: RequestContext, status: int, seconds: float) -> None:
    tenant = scope.get("path_params", {}).get("tenant")
    access_logger.info(
        "%s %s %s",
        scope["method"],
        route_template(scope),
        status,
        extra={
            "request_id": context.request_id,
            "method": scope["method"],
            "route": route_template(scope),
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "user_id": (
                encode_id(IdKind.USER, context.user_id) if context.user_id is not None else None
            ),
            "tenant": str(tenant)[:_MAX_TENANT_CHARS] if tenant is not None else None,
        },
    )
