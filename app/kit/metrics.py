"""Prometheus metrics. Labels are bounded: route templates (never raw paths with tenant slugs),
job kinds, search modes, backend families; nothing is labelled by tenant or user.

Every series this process measures is declared here, so the list in the README, the alert
rules (docker/prometheus/alerts.yml) and the dashboard (docker/grafana/cairn-dashboard.json)
have one place to check against. Figures read from the database when /metrics is scraped (queue
depth, documents per tenant) are not process state: app/health/service.py builds them per scrape.

Multi-process mode: with PROMETHEUS_MULTIPROC_DIR set in the environment before the process
starts, prometheus-client keeps every counter, histogram and gauge in memory-mapped files in
that directory, and /metrics reports the sum over every process that writes there (API
processes and `cairn worker` processes on one host). The directory must be emptied before the
processes start, or a previous run's counts are added in.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable

from fastapi import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.errors import NotAuthenticated
from app.kit.request_context import route_template

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("cairn_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "cairn_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOB_SECONDS = Histogram(
    "cairn_job_seconds",
    "Background job run time by kind and outcome (done, failed, retry, lost, error)",
    ["kind", "outcome"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
SEARCH_SECONDS = Histogram(
    "cairn_search_seconds",
    "Retrieval time by mode (after the query embedding)",
    ["mode"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EMBEDDING_SECONDS = Histogram(
    "cairn_query_embedding_seconds",
    "Time to embed one search or chat query",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GENERATION_TOKENS = Counter(
    "cairn_generation_tokens_total",
    "Completion tokens generated (streamed answers: one per text delta)",
    ["backend"],
)
GENERATION_FIRST_TOKEN = Histogram(
    "cairn_generation_time_to_first_token_seconds",
    "From asking the generator (queueing for a slot included) to its first text delta",
    ["backend"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
)
GENERATION_SECONDS = Histogram(
    "cairn_generation_seconds",
    "Whole generations, queueing for a slot included",
    ["backend"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
RATE_LIMIT_REJECTIONS = Counter(
    "cairn_rate_limit_rejections_total",
    "Requests refused by a limit (signin_username, signin_address, generator_slots, "
    "quota_search, quota_chat, quota_upload)",
    ["limit"],
)
CACHE_LOOKUPS = Counter(
    "cairn_cache_lookups_total",
    "Cache lookups by cache (answer, query_embedding) and result (hit, miss, stale: found but "
    "a document of its prompt is no longer visible to the caller, so not served)",
    ["cache", "result"],
)
AUDIT_VERIFY_OK = Gauge(
    "cairn_audit_verify_ok",
    "1 when the latest audit check passed, 0 when it found a problem (check: checkpoint = the "
    "periodic checkpoint job, verify = an audit verification)",
    ["check"],
    # Across processes the latest result wins, whichever process ran the check.
    multiprocess_mode="mostrecent",
)


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
            route = route_template(scope)
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


def multiprocess_mode() -> bool:
    """Whether metrics are shared through PROMETHEUS_MULTIPROC_DIR."""
    return bool(os.environ.get(MULTIPROC_ENV))


class _Exposition(Collector):
    """This process's metrics (or every process's, in multi-process mode) plus figures read at
    scrape time."""

    def __init__(self, extra: Iterable[Metric]) -> None:
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            self.base: Collector = registry
        else:
            self.base = REGISTRY
        self.extra = list(extra)

    def collect(self) -> Iterable[Metric]:
        yield from self.base.collect()
        yield from self.extra


def metrics_response(extra: Iterable[Metric] = ()) -> Response:
    """The Prometheus exposition, with `extra` families appended."""
    return Response(generate_latest(_Exposition(extra)), media_type=CONTENT_TYPE_LATEST)
