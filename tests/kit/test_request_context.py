"""Request ids (echoed, in error bodies and audit entries) and the JSON access log line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.audit.chain import GLOBAL_CHAIN
from app.audit.service import audit_service, details_dict
from app.kit.actor import SystemActor
from app.kit.logs import JsonFormatter, logging_config
from app.kit.public_ids import IdKind, encode_id
from app.models import AuditEntry
from tests.conftest import Api, assert_error, make_settings
from tests.helpers import key_of

SANE = "req-1.A_b"


@pytest.fixture
async def lenient_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Answers unhandled errors with the 500 response instead of raising them here."""

    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def test_a_sane_request_id_is_echoed_and_others_are_replaced(
    client: httpx.AsyncClient,
) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": SANE})
    assert echoed.headers["x-request-id"] == SANE
    for insane in ("x" * 129, "has space", "semi;colon", "ünïcode".encode(), ""):
        response = await client.get("/healthz", headers={"X-Request-ID": insane})
        generated = response.headers["x-request-id"]
        assert generated != insane
        assert len(generated) == 32
        int(generated, 16)
    fresh = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(3)}
    assert len(fresh) == 3
    assert (await client.get("/healthz", headers={"X-Request-ID": "y" * 128})).headers[
        "x-request-id"
    ] == "y" * 128


async def test_every_error_body_carries_the_request_id(
    client: httpx.AsyncClient, lenient_client: httpx.AsyncClient
) -> None:
    responses = [
        await client.get("/api/v1/tenants", headers={"X-Request-ID": SANE}),  # our own (401)
        await client.get("/nowhere", headers={"X-Request-ID": SANE}),  # the framework's (404)
        await client.post(  # validation (422)
            "/api/v1/auth/token", data={"username": "x"}, headers={"X-Request-ID": SANE}
        ),
        await client.post(  # the body limit, outside the app (413)
            "/api/v1/auth/token",
            content=b"x",
            headers={"X-Request-ID": SANE, "Content-Length": str(10**12)},
        ),
        await lenient_client.get("/boom", headers={"X-Request-ID": SANE}),  # unhandled (500)
    ]
    assert [r.status_code for r in responses] == [401, 404, 422, 413, 500]
    for response in responses:
        assert_error(response, response.status_code)
        assert response.json()["error"]["request_id"] == SANE, response.text
        assert response.headers["x-request-id"] == SANE, response.status_code
    assert "secret internals" not in responses[-1].text


async def test_audit_entries_record_the_request_id(
    app: FastAPI, api: Api, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/api/v1/tenants",
        json={"slug": "hr", "name": "HR"},
        headers={**await api.admin(), "X-Request-ID": "create-hr-1"},
    )
    assert response.status_code == 201, response.text
    async with app.state.database.sessionmaker() as session, session.begin():
        created = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "tenant.create")
        )
        assert created is not None
        assert details_dict(created)["request_id"] == "create-hr-1"
        # Outside a request (CLI, jobs) there is none.
        outside = await audit_service.record(
            session, action="test.outside", actor=SystemActor.OPERATOR, details={"n": 1}
        )
        assert details_dict(outside) == {"n": 1}
    # The id is part of the hashed content: the chain still verifies.
    verified = await client.get("/api/v1/audit/verify", headers=await api.admin())
    assert verified.json()["ok"] is True
    assert created.chain in (GLOBAL_CHAIN, f"tenant:{key_of(response.json()['id'])}")


async def test_one_json_access_line_per_request(
    api: Api, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await api.tenant("hr")
    admin = await api.admin()
    me = (await client.get("/api/v1/users/me", headers=admin)).json()
    caplog.set_level(logging.INFO, logger="cairn.access")
    caplog.clear()
    response = await client.get("/api/v1/tenants/hr", headers={**admin, "X-Request-ID": "line-1"})
    anonymous = await client.get("/healthz", headers={"X-Request-ID": "line-2"})
    assert response.status_code == 200
    assert anonymous.status_code == 200
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "cairn.access"
    ]
    assert len(lines) == 2
    line = lines[0]
    assert line["request_id"] == "line-1"
    assert line["route"] == "/api/v1/tenants/{tenant}"
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert isinstance(line["latency_ms"], float)
    assert line["latency_ms"] >= 0
    assert line["user_id"] == me["id"] == encode_id(IdKind.USER, key_of(me["id"]))
    assert line["tenant"] == "hr"
    assert line["level"] == "INFO"
    assert line["logger"] == "cairn.access"
    assert lines[1]["request_id"] == "line-2"
    assert lines[1]["route"] == "/healthz"
    assert lines[1]["user_id"] is None
    assert lines[1]["tenant"] is None


def test_logging_config_comes_from_configs(tmp_path: Path) -> None:
    config = logging_config(make_settings("sqlite://", tmp_path, log_level="warning"))
    assert config["root"]["level"] == "WARNING"
    assert config["handlers"]["console"]["formatter"] == "json"
    assert config["formatters"]["json"]["()"] == "app.kit.logs.JsonFormatter"
    # uvicorn's own access line is replaced by cairn.access.
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
    text = logging_config(make_settings("sqlite://", tmp_path, log_format="text"))
    assert text["handlers"]["console"]["formatter"] == "text"


def test_the_json_formatter_keeps_extra_fields_and_tracebacks() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed %s", ("job",), sys.exc_info()
        )
    record.__dict__["job_id"] = 7
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed job"
    assert line["job_id"] == 7
    assert "ValueError: boom" in line["exc"]
    assert "request_id" not in line
