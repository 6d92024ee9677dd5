from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response

from app.container import container_of
from app.health.schemas import GeneratorPreparationRead, ReadyRead
from app.health.service import health_service
from app.kit.auth import AppSettings
from app.kit.errors import ServiceUnavailable
from app.kit.metrics import metrics_response, require_metrics_token

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyRead)
async def readyz(
    request: Request,
    settings: AppSettings,
    generator: Annotated[
        Literal["required", "optional"],
        Query(description="optional: a preloaded generator still being prepared is not a failure"),
    ] = "required",
) -> ReadyRead:
    """Ready to serve: the database answers and is migrated to head, the broker answers when
    one is configured, the generator is loaded when it is preloaded. Otherwise 503, with the
    failing checks' reasons in the message and every check in the details. Either way the
    answer model's preparation (state, percent, time left) is in `generator`."""
    container = container_of(request)
    # Before the lifespan's start-up (and after its shutdown) there is nothing to check.
    report = await health_service.readiness(
        settings,
        database=container.database if container.serving else None,
        generator=container.generator if container.serving else None,
        require_generator=generator == "required",
    )
    if not report.ready:
        raise ServiceUnavailable(
            "Not ready: " + "; ".join(report.reasons),
            code="not_ready",
            details={
                "checks": report.checks,
                "reasons": report.reasons,
                "generator": report.generator,
            },
        )
    preparation = report.generator
    return ReadyRead(
        checks=report.checks,
        generator=None if preparation is None else GeneratorPreparationRead(**preparation),
    )


@router.get("/metrics")
async def metrics(
    request: Request,
    settings: AppSettings,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Prometheus metrics (a bearer token is required when metrics_token is set)."""
    require_metrics_token(settings.metrics_token, authorization)
    container = container_of(request)
    families = await health_service.metric_families(
        container.database if container.serving else None
    )
    return metrics_response(families)
