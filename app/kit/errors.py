"""The one error hierarchy and the handlers that render it as SPEC.md's JSON error shape."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from app.kit.envelope import EncryptionError
from app.kit.request_context import REQUEST_ID_HEADER, current_request_id, request_id_of

logger = logging.getLogger(__name__)


class CairnError(Exception):
    status_code = 500
    code = "internal_error"
    message = "Internal server error"
    # Machine-readable particulars rendered as the error's "details" (None: no such key).
    details: Any = None

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        self.message = message or self.message
        self.status_code = status_code or self.status_code
        self.code = code or self.code
        self.headers = headers
        if details is not None:
            self.details = details
        super().__init__(self.message)


class BadRequest(CairnError):
    status_code = 400
    code = "bad_request"
    message = "Bad request"


class NotAuthenticated(CairnError):
    status_code = 401
    code = "not_authenticated"
    message = "Missing or invalid credentials"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotPermitted(CairnError):
    status_code = 403
    code = "forbidden"
    message = "You are not allowed to do this"


class ResourceNotFound(CairnError):
    status_code = 404
    code = "not_found"
    message = "Not found"


class Conflict(CairnError):
    status_code = 409
    code = "conflict"
    message = "Conflict"


class PayloadTooLarge(CairnError):
    status_code = 413
    code = "payload_too_large"
    message = "Payload too large"


class UnsupportedMediaType(CairnError):
    status_code = 415
    code = "unsupported_media_type"
    message = "Unsupported media type"


class ValidationFailed(CairnError):
    status_code = 422
    code = "validation_error"
    message = "Validation failed"


class RateLimited(CairnError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests"


class ServiceUnavailable(CairnError):
    status_code = 503
    code = "unavailable"
    message = "Service unavailable"


def error_body(
    code: str, message: str, details: Any = None, *, request_id: str | None = None
) -> dict[str, Any]:
    """SPEC.md's error shape, with the request's id when there is one."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


async def send_closing_error(send: Send, status: int, code: str, message: str) -> None:
    """Answer a raw ASGI request with the JSON error shape and `Connection: close`, from a
    middleware that stops reading the body (the rest of it may still be on its way)."""
    body = json.dumps(error_body(code, message, request_id=current_request_id())).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: echoing "input" could reflect passwords back.
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": err.get("msg"),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, including framework ones, in the JSON error shape."""

    async def cairn_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CairnError)
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details, request_id=current_request_id()),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(
            error_body(
                "validation_error",
                "Request validation failed",
                _validation_details(exc),
                request_id=current_request_id(),
            ),
            status_code=422,
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(
            error_body(code, message, request_id=current_request_id()),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
        # Every database connection stayed busy for the pool's whole timeout: the process is
        # overloaded (`cairn bench serve` at concurrency 32 on 2 cores), not broken. A client
        # should back off and retry, as for any 503.
        request_id = request_id_of(request.scope)
        logger.warning("database connection pool exhausted: %s", exc)
        headers = {"Retry-After": "1"}
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        return JSONResponse(
            error_body("unavailable", "Server busy, retry shortly", request_id=request_id),
            status_code=503,
            headers=headers,
        )

    async def undecryptable(request: Request, exc: Exception) -> JSONResponse:
        # A wrong or missing KEK, a destroyed key, a moved ciphertext: the operator must act,
        # the client can only be told so. Which object failed (tenant, document hash) goes to
        # the server log only.
        request_id = request_id_of(request.scope)
        logger.error("decryption failed: %s", exc, extra={"request_id": request_id})
        return JSONResponse(
            error_body(
                "decryption_failed",
                "Stored data could not be decrypted with the configured keys; the server log "
                "says which (quote the request id to the operator)",
                request_id=request_id,
            ),
            status_code=500,
            headers={REQUEST_ID_HEADER: request_id} if request_id else None,
        )

    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        # The trace goes to the server log, never to the client. Starlette runs this handler
        # outside every middleware, so the request id comes from the scope and the header is
        # set here.
        request_id = request_id_of(request.scope)
        logger.exception("unhandled error", exc_info=exc, extra={"request_id": request_id})
        return JSONResponse(
            error_body("internal_error", "Internal server error", request_id=request_id),
            status_code=500,
            headers={REQUEST_ID_HEADER: request_id} if request_id else None,
        )

    app.add_exception_handler(CairnError, cairn_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(PoolTimeout, pool_exhausted)
    app.add_exception_handler(EncryptionError, undecryptable)
    app.add_exception_handler(Exception, unhandled)
