from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy import text

from app.kit.auth import AppSettings
from app.kit.db import Database
from app.kit.errors import ServiceUnavailable
from app.kit.metrics import metrics_response, require_metrics_token

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    """The database answers and the schema is migrated."""
    database: Database = request.app.state.database
    try:
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM authz_revision"))
    except Exception as exc:  # any driver error means "not ready"; the detail stays in the log
        raise ServiceUnavailable("Database not ready") from exc
    return {"status": "ready"}


@router.get("/metrics")
async def metrics(
    settings: AppSettings, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus metrics (a bearer token is required when metrics_token is set)."""
    require_metrics_token(settings.metrics_token, authorization)
    return metrics_response()
