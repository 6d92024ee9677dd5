"""What /metrics reports beyond HTTP counts: jobs, search, embedding, generation, refusals,
documents per tenant (without tenant labels), audit checks; and multi-process mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import limits
import pytest
import yaml
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from app.audit.chain import GLOBAL_CHAIN
from app.audit.checkpoints import write_checkpoints
from app.generation.base import ChatMessage, GenerationLimits, GeneratorBusy
from app.generation.limits import GenerationSlots
from app.health.service import health_service
from app.kit.ratelimit import LoginThrottle
from app.kit.settings import PROJECT_ROOT
from app.main import create_app
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import Api, make_settings
from tests.documents.helpers import wait_for

SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series is not there."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def registered(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@SQLITE
async def test_ingest_and_search_show_up(api: Api, client: httpx.AsyncClient) -> None:
    await api.tenant("hr")
    await api.tenant("empty")
    editor = await api.user("ed", hr="editor")
    before = await scrape(client)
    upload = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("policy.txt", b"Vacation policy: twenty five days of paid vacation.")},
        headers=editor,
    )
    assert upload.status_code == 202, upload.text
    assert (await wait_for(client, editor, "hr", upload.json()["id"]))["status"] == "ready"
    for mode in ("hybrid", "bm25", "vector"):
        found = await client.post(
            "/api/v1/tenants/hr/search", json={"query": "vacation", "mode": mode}, headers=editor
        )
        assert found.status_code == 200, found.text
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("cairn_job_seconds_count", kind="ingest", outcome="done") == 1
    for mode in ("hybrid", "bm25", "vector"):
        assert grew("cairn_search_seconds_count", mode=mode) == 1, mode
    # Hybrid embeds the query; vector finds its vector in the query-embedding cache.
    assert grew("cairn_query_embedding_seconds_count") == 1
    assert grew("cairn_cache_lookups_total", cache="query_embedding", result="hit") == 1
    # Read from the database at scrape time: totals and a histogram, no tenant named.
    assert value(after, "cairn_database_up") == 1
    assert value(after, "cairn_tenants") == 2
    assert value(after, "cairn_documents") == 1
    assert value(after, "cairn_chunks") >= 1
    assert value(after, "cairn_tenant_documents_bucket", le="0.0") == 1  # "empty"
    assert value(after, "cairn_tenant_documents_bucket", le="10.0") == 2
    assert value(after, "cairn_tenant_documents_count") == 2
    assert value(after, "cairn_tenant_documents_sum") == 1
    assert not any(("tenant", "hr") in labels for _, labels in after)


@SQLITE
async def test_queue_depth_is_read_from_the_job_table(database_url: str, tmp_path: Path) -> None:
    # No worker pool: the upload's job stays queued.
    app = create_app(make_settings(database_url, tmp_path / "data", embedded_workers=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            api = Api(client)
            await api.tenant("hr")
            editor = await api.user("ed", hr="editor")
            for name in ("a.txt", "b.txt"):
                response = await client.post(
                    "/api/v1/tenants/hr/documents",
                    files={"file": (name, name.encode() * 20)},
                    headers=editor,
                )
                assert response.status_code == 202, response.text
            queued = await scrape(client)
            async with app.state.database.engine.begin() as conn:
                await conn.execute(
                    text("UPDATE jobs SET status = 'failed' WHERE id = (SELECT min(id) FROM jobs)")
                )
            failed = await scrape(client)
    assert value(queued, "cairn_jobs", kind="ingest", status="queued") == 2
    assert value(queued, "cairn_jobs_oldest_queued_seconds", kind="ingest") >= 0
    assert ("cairn_jobs_oldest_queued_seconds", frozenset({("kind", "ingest")})) in queued
    assert value(failed, "cairn_jobs", kind="ingest", status="queued") == 1
    assert value(failed, "cairn_jobs", kind="ingest", status="failed") == 1


@SQLITE
async def test_audit_checks_set_the_verify_gauge(
    app: FastAPI, api: Api, client: httpx.AsyncClient
) -> None:
    await api.tenant("hr")
    verified = await client.get("/api/v1/audit/verify", headers=await api.admin())
    assert verified.json()["ok"] is True
    assert value(await scrape(client), "cairn_audit_verify_ok", check="verify") == 1
    async with app.state.database.sessionmaker() as session, session.begin():
        await write_checkpoints(session, app.state.settings)
    assert value(await scrape(client), "cairn_audit_verify_ok", check="checkpoint") == 1

    async with app.state.database.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE audit_entries SET entry_hash = :bad WHERE id = "
                "(SELECT max(id) FROM audit_entries WHERE chain = :chain)"
            ),
            {"bad": "0" * 64, "chain": GLOBAL_CHAIN},
        )
    # The checkpoint job looks at chains that moved since their last checkpoint.
    await api.tenant("eng")
    verified = await client.get("/api/v1/audit/verify", headers=await api.admin())
    assert verified.json()["ok"] is False
    async with app.state.database.sessionmaker() as session, session.begin():
        await write_checkpoints(session, app.state.settings)
    samples = await scrape(client)
    assert value(samples, "cairn_audit_verify_ok", check="verify") == 0
    assert value(samples, "cairn_audit_verify_ok", check="checkpoint") == 0


async def test_generation_tokens_time_to_first_token_and_busy_refusals() -> None:
    generator = limited(EchoGenerator())
    messages = [ChatMessage("system", "one"), ChatMessage("user", "two")]
    tokens = registered("cairn_generation_tokens_total", backend="echo")
    first = registered("cairn_generation_time_to_first_token_seconds_count", backend="echo")
    deltas = [d async for d in generator.stream(messages, GenerationLimits())]
    assert len(deltas) == 2
    assert registered("cairn_generation_tokens_total", backend="echo") == tokens + 2
    assert (
        registered("cairn_generation_time_to_first_token_seconds_count", backend="echo")
        == first + 1
    )
    completion = generator.complete(messages, GenerationLimits())
    assert registered("cairn_generation_tokens_total", backend="echo") == (
        tokens + 2 + completion.completion_tokens
    )

    busy = registered("cairn_rate_limit_rejections_total", limit="generator_slots")
    slots = GenerationSlots(1, queue_timeout=0)
    with slots.hold(), pytest.raises(GeneratorBusy):
        slots.hold().__enter__()
    assert registered("cairn_rate_limit_rejections_total", limit="generator_slots") == busy + 1


async def test_sign_in_refusals_are_counted() -> None:
    throttle = LoginThrottle(
        MemoryStorage(),
        per_username=limits.parse("1/minute"),
        per_address=limits.parse("100/minute"),
        key_secret="k" * 32,
    )
    before = registered("cairn_rate_limit_rejections_total", limit="signin_username")
    # The counters are process-wide: earlier tests in the run may have counted refusals.
    address_before = registered("cairn_rate_limit_rejections_total", limit="signin_address")
    assert await throttle.check(username="ann", address="10.0.0.1") is None
    await throttle.failed(username="ann", address="10.0.0.1")
    refused = await throttle.check(username="ann", address="10.0.0.1")
    assert refused is not None
    assert refused.scopes == ("username",)
    assert registered("cairn_rate_limit_rejections_total", limit="signin_username") == before + 1
    assert registered("cairn_rate_limit_rejections_total", limit="signin_address") == address_before


_WORKER = """
from app.kit.metrics import JOB_SECONDS, RATE_LIMIT_REJECTIONS
RATE_LIMIT_REJECTIONS.labels("signin_address").inc(3)
JOB_SECONDS.labels("ingest", "done").observe(1.0)
"""
_SCRAPE = """
from app.kit.metrics import metrics_response
print(metrics_response().body.decode())
"""


def test_multiprocess_mode_adds_up_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def run(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    run(_WORKER)
    run(_WORKER)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], Any] = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(run(_SCRAPE))
        for sample in family.samples
    }
    assert value(samples, "cairn_rate_limit_rejections_total", limit="signin_address") == 6
    assert value(samples, "cairn_job_seconds_count", kind="ingest", outcome="done") == 2


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


@SQLITE
async def test_alerts_and_dashboard_use_only_series_cairn_exports(app: FastAPI) -> None:
    families = [
        *REGISTRY.collect(),
        *await health_service.metric_families(app.state.database),
    ]
    exported = {
        family.name + suffix
        for family in families
        if family.name.startswith("cairn_")
        for suffix in _SUFFIXES[family.type]
    }
    docker = PROJECT_ROOT / "docker"
    rules = yaml.safe_load((docker / "prometheus" / "alerts.yml").read_text())
    alerts = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((docker / "grafana" / "cairn-dashboard.json").read_text())
    panels = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]

    def named(expressions: list[str]) -> set[str]:
        return {name for expr in expressions for name in re.findall(r"\bcairn_[a-z_]+", expr)}

    assert named(alerts) <= exported, named(alerts) - exported
    assert named(panels) <= exported, named(panels) - exported
    # Every series Cairn exports is on the dashboard.
    for family in families:
        if family.name.startswith("cairn_"):
            assert any(n.startswith(family.name) for n in named(panels)), family.name
