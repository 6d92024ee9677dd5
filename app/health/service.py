"""Readiness, and the figures /metrics reads from the database at scrape time.

Readiness: the database answers and is at the migrations' head, the broker takes a connection
and Redis answers a PING when they are configured, and the generator is loaded when it is
meant to be preloaded (`?generator=optional`: a preparation in progress is no failure; its
progress is reported either way). Each failing check gives a short reason (an exception's type,
never its text: the endpoint is public and driver messages name hosts); the detail goes to the
log.

Queue depth and documents per tenant are read from the database when /metrics is scraped,
not kept in gauges by the worker pool: the job table is the truth for every kind of runner
(the in-process pool, Celery workers on other hosts), and a figure read per scrape is the same
whichever process answers, so nothing is summed twice in multi-process mode. Both queries are
cheap: the job one is a range of the status index that skips done jobs, the document one one
grouped pass over live documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from app.documents.repository import document_repository
from app.generation.provider import GeneratorProvider
from app.jobs.dispatch import broker_problem
from app.jobs.repository import job_repository
from app.kit.db import Database
from app.kit.migrate import current_revisions, head_revisions
from app.kit.settings import Settings
from app.models.base import utcnow

logger = logging.getLogger(__name__)

OK = "ok"
DATABASE_TIMEOUT_SECONDS = 5.0
BROKER_TIMEOUT_SECONDS = 3.0
# Documents per tenant: bucket bounds of the (tenant-free) histogram.
TENANT_DOCUMENT_BUCKETS = (0, 10, 100, 1_000, 10_000, 100_000, 1_000_000)


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]
    failing: dict[str, str]
    # The answer model's preparation (Snapshot.as_dict() plus "preparing"); None: no provider.
    generator: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return not self.failing

    @property
    def reasons(self) -> list[str]:
        return [f"{name}: {reason}" for name, reason in self.failing.items()]


class HealthService:
    async def readiness(
        self,
        settings: Settings,
        *,
        database: Database | None,
        generator: GeneratorProvider | None,
        require_generator: bool = True,
    ) -> Readiness:
        """Every check's state, and the failing ones with their reasons.

        A preloaded generator still being prepared fails readiness unless
        `require_generator` is False (search, uploads and the web pages work meanwhile; chat
        answers 503 generator_preparing)."""
        checks: dict[str, str] = {}
        failing: dict[str, str] = {}

        def note(name: str, state: str, *, ok: bool) -> None:
            checks[name] = state
            if not ok:
                failing[name] = state

        revisions = await self._revisions(database)
        if isinstance(revisions, str):
            note("database", revisions, ok=False)
            note("migrations", "not checked (no database)", ok=False)
        else:
            note("database", OK, ok=True)
            heads = head_revisions()
            if revisions == heads:
                note("migrations", OK, ok=True)
            elif not revisions:
                note("migrations", "not migrated (run `cairn migrate`)", ok=False)
            else:
                note(
                    "migrations",
                    f"at {','.join(sorted(revisions))}, head is {','.join(sorted(heads))}",
                    ok=False,
                )
        if settings.broker_url:
            problem = await self._broker_problem(settings.broker_url)
            note("broker", problem or OK, ok=problem is None)
        else:
            note("broker", "not configured", ok=True)
        if settings.redis_url:
            # Shared quota and sign-in counters and the caches live there: without it the API
            # processes would each count alone (or refuse), so a replica is not ready.
            problem = await self._redis_problem(settings.redis_url)
            note("redis", problem or OK, ok=problem is None)
        else:
            note("redis", "not configured", ok=True)
        preparation = generator.preparation if generator is not None else None
        if generator is not None and generator.loaded:
            note("generator", OK, ok=True)
        elif preparation is not None and preparation.preparing:
            note(
                "generator",
                f"preparing ({preparation.state} {preparation.stage_percent or 0}%, "
                f"{preparation.percent}% overall)",
                ok=not (settings.generator.preload and require_generator),
            )
        elif not settings.generator.preload:
            note("generator", "not preloaded", ok=True)
        elif generator is not None and generator.failure:
            note("generator", f"failed to load ({generator.failure})", ok=False)
        else:
            note("generator", "preparing (starting)", ok=not require_generator)
        details = None
        if preparation is not None:
            details = {**preparation.as_dict(), "preparing": preparation.preparing}
        return Readiness(checks, failing, details)

    async def _revisions(self, database: Database | None) -> frozenset[str] | str:
        """The database's revisions, or why they could not be read."""
        if database is None:
            return "not started"
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
                async with database.engine.connect() as connection:
                    return await connection.run_sync(current_revisions)
        except TimeoutError:
            return f"no answer within {DATABASE_TIMEOUT_SECONDS:g}s"
        except Exception as exc:  # noqa: BLE001 - any driver error means "not ready"
            logger.warning("readiness: database unreachable: %s", exc)
            return f"unreachable ({type(exc).__name__})"

    async def _broker_problem(self, broker_url: str) -> str | None:
        try:
            async with asyncio.timeout(BROKER_TIMEOUT_SECONDS * 2):
                return await asyncio.to_thread(broker_problem, broker_url, BROKER_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"no answer within {BROKER_TIMEOUT_SECONDS * 2:g}s"

    async def _redis_problem(self, redis_url: str) -> str | None:
        """Why Redis does not answer a PING, or None when it does."""
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            redis_url,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
        )
        try:
            async with asyncio.timeout(BROKER_TIMEOUT_SECONDS * 2):
                await client.ping()
        except TimeoutError:
            return f"no answer within {BROKER_TIMEOUT_SECONDS * 2:g}s"
        except Exception as exc:  # noqa: BLE001 - any client error means "not reachable"
            logger.warning("readiness: redis unreachable: %s", exc)
            return f"unreachable ({type(exc).__name__})"
        finally:
            await client.aclose()
        return None

    async def metric_families(self, database: Database | None) -> list[Metric]:
        """Queue depth and documents per tenant, read now; `cairn_database_up` 0 (and nothing
        else) when the database does not answer."""
        if database is None:
            return []
        up = GaugeMetricFamily(
            "cairn_database_up", "1 when /metrics could read the database, else 0"
        )
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
                async with database.read_sessionmaker() as session:
                    depth = await job_repository.depth(session)
                    oldest = await job_repository.oldest_runnable(session)
                    tenants = await document_repository.totals_per_tenant(session)
        except Exception as exc:  # noqa: BLE001 - the process's own metrics are still served
            logger.warning("metrics: database figures unavailable: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *_job_families(depth, oldest), *_tenant_families(tenants)]


def _job_families(
    depth: Iterable[tuple[str, str, int]], oldest: dict[str, datetime]
) -> list[Metric]:
    jobs = GaugeMetricFamily(
        "cairn_jobs",
        "Jobs by kind and status (queued, running, failed) in the job table",
        labels=["kind", "status"],
    )
    for kind, status, count in depth:
        jobs.add_metric([kind, status], count)
    waiting = GaugeMetricFamily(
        "cairn_jobs_oldest_queued_seconds",
        "How long the longest-waiting runnable queued job of each kind has waited",
        labels=["kind"],
    )
    now = utcnow()
    for kind, since in oldest.items():
        waiting.add_metric([kind], max(0.0, (now - since).total_seconds()))
    return [jobs, waiting]


def _tenant_families(tenants: list[tuple[int, int]]) -> list[Metric]:
    documents = sum(d for d, _ in tenants)
    chunks = sum(c for _, c in tenants)
    families: list[Metric] = []
    for name, help_text, value in (
        ("cairn_tenants", "Tenants", len(tenants)),
        ("cairn_documents", "Documents, deleted ones left out, over every tenant", documents),
        ("cairn_chunks", "Chunks of those documents, over every tenant", chunks),
    ):
        family = GaugeMetricFamily(name, help_text)
        family.add_metric([], value)
        families.append(family)
    # Bounds written as prometheus-client writes its own ("10.0", "1e+06").
    bounds = [floatToGoString(bound) for bound in TENANT_DOCUMENT_BUCKETS]  # type: ignore[no-untyped-call]
    buckets: list[tuple[str, float]] = [
        (label, sum(1 for d, _ in tenants if d <= bound))
        for label, bound in zip(bounds, TENANT_DOCUMENT_BUCKETS, strict=True)
    ]
    buckets.append(("+Inf", len(tenants)))
    families.append(
        HistogramMetricFamily(
            "cairn_tenant_documents",
            "Tenants by their number of documents (no tenant is named)",
            buckets=buckets,
            sum_value=documents,
        )
    )
    return families


health_service = HealthService()
