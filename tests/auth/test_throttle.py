"""Sign-in throttling, tested the way the attack was made: many wrong passwords in a row."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

import app.auth.service as auth_service_module
from app.audit.chain import GLOBAL_CHAIN
from app.main import create_app
from app.models import AuditEntry
from tests.conftest import (
    ADMIN_PASSWORD,
    REDIS_URL,
    TEST_SECRET,
    Api,
    assert_error,
    make_settings,
    require_service,
    running_app,
)
from tests.helpers import without_request_id

Served = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, Api]]]


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Served:
    """Start the app with these settings; yields it and an Api whose client comes from 10.0.0.1."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[FastAPI, Api]]:
        settings = make_settings(database_url, tmp_path / "data", **overrides)
        async with running_app(settings, client_address=("10.0.0.1", 4000)) as started:
            yield started

    return start


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str, address: str | None = None
) -> httpx.Response:
    if address is None:
        return await client.post(
            "/api/v1/auth/token", data={"username": username, "password": password}
        )
    # Another client address: a second transport onto the same app.
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, client=(address, 4000)),
        base_url="http://cairn.test",
    ) as other:
        return await other.post(
            "/api/v1/auth/token", data={"username": username, "password": password}
        )


async def global_entries(application: FastAPI) -> list[AuditEntry]:
    async with application.state.database.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.chain == GLOBAL_CHAIN).order_by(AuditEntry.seq)
        )
        return list(rows)


def details(entry: AuditEntry) -> dict[str, Any]:
    """An entry's details, less the id of the request that caused it."""
    return dict(without_request_id(json.loads(entry.details)))


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts password verifications made by sign-in."""
    calls: list[int] = []
    verify = auth_service_module.verify_password

    def counting(password_hash: str | None, password: str) -> bool:
        calls.append(1)
        return verify(password_hash, password)

    monkeypatch.setattr(auth_service_module, "verify_password", counting)
    return calls


def retry_after(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isdigit(), value
    return int(value)


async def test_forty_wrong_passwords_are_throttled_before_argon2_and_audit(
    served: Served, argon2_calls: list[int]
) -> None:
    async with served() as (application, api):
        await api.user("victim")
        entries_before = len(await global_entries(application))
        argon2_calls.clear()

        statuses = []
        for _ in range(40):
            response = await sign_in(api.client, "victim", "guess-" + uuid.uuid4().hex[:6])
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert_error(response, 429, "rate_limited")
                assert 1 <= retry_after(response) <= 15 * 60
        # The default budget: 10 failures per username in 15 minutes.
        assert statuses == [401] * 10 + [429] * 30
        # Refused attempts cost no argon2 ...
        assert len(argon2_calls) == 10
        # ... and the chain grew by the 10 failures plus one "throttled" entry, not 40.
        entries = (await global_entries(application))[entries_before:]
        assert len(entries) == 11
        assert {e.action for e in entries} == {"auth.login"}
        assert {e.outcome for e in entries} == {"failure"}
        assert details(entries[-1]) == {"reason": "throttled", "limits": ["username"]}

        # Even the right password waits out the window: the throttle cannot tell who is asking.
        assert_error(await sign_in(api.client, "victim", "victim-password"), 429, "rate_limited")
        # Other users are unaffected.
        assert (await sign_in(api.client, "admin", ADMIN_PASSWORD)).status_code == 200


async def test_the_throttle_lifts_after_the_window(served: Served) -> None:
    async with served(auth={"login_failures_per_username": "3/1 second"}) as (application, api):
        await api.user("victim")
        for _ in range(3):
            assert_error(await sign_in(api.client, "victim", "wrong-password"), 401)
        refused = await sign_in(api.client, "victim", "victim-password")
        assert_error(refused, 429, "rate_limited")
        assert retry_after(refused) == 1
        await asyncio.sleep(retry_after(refused) + 0.1)
        assert (await sign_in(api.client, "victim", "victim-password")).status_code == 200


async def test_successful_sign_ins_do_not_use_the_budget(served: Served) -> None:
    async with served(auth={"login_failures_per_username": "3/15 minutes"}) as (_, api):
        await api.user("victim")
        for _ in range(2):
            assert_error(await sign_in(api.client, "victim", "wrong-password"), 401)
        for _ in range(5):
            assert (await sign_in(api.client, "victim", "victim-password")).status_code == 200
        assert_error(await sign_in(api.client, "victim", "wrong-password"), 401)
        assert_error(await sign_in(api.client, "victim", "victim-password"), 429, "rate_limited")


async def test_username_budget_ignores_case_and_spaces(served: Served) -> None:
    async with served(auth={"login_failures_per_username": "2/15 minutes"}) as (_, api):
        await api.user("victim")
        assert_error(await sign_in(api.client, "victim", "wrong-password"), 401)
        assert_error(await sign_in(api.client, " VICTIM ", "wrong-password"), 401)
        assert_error(await sign_in(api.client, "Victim", "victim-password"), 429, "rate_limited")


async def test_one_address_trying_many_usernames_is_throttled(
    served: Served, argon2_calls: list[int]
) -> None:
    async with served(auth={"login_failures_per_address": "5/15 minutes"}) as (application, api):
        await api.admin()
        entries_before = len(await global_entries(application))
        argon2_calls.clear()
        for n in range(5):
            response = await sign_in(api.client, f"user{n}", "password-guess", "10.9.9.9")
            assert_error(response, 401)
        for n in range(5, 20):
            refused = await sign_in(api.client, f"user{n}", "password-guess", "10.9.9.9")
            assert_error(refused, 429, "rate_limited")
            assert retry_after(refused) > 0
        assert len(argon2_calls) == 5
        entries = (await global_entries(application))[entries_before:]
        assert details(entries[-1]) == {"reason": "throttled", "limits": ["address"]}
        assert len(entries) == 6
        # The address is refused even for a good password; another address is not.
        assert_error(await sign_in(api.client, "admin", ADMIN_PASSWORD, "10.9.9.9"), 429)
        assert (await sign_in(api.client, "admin", ADMIN_PASSWORD, "10.9.9.10")).status_code == 200


async def test_wrong_current_password_on_change_counts_as_failed_sign_in(
    served: Served,
) -> None:
    async with served(auth={"login_failures_per_username": "3/15 minutes"}) as (_, api):
        headers = await api.user("victim")
        body = {"current_password": "wrong-password", "new_password": "a brand new passphrase"}
        for _ in range(3):
            response = await api.client.post(
                "/api/v1/users/me/password", json=body, headers=headers
            )
            assert_error(response, 403, "wrong_password")
        refused = await api.client.post("/api/v1/users/me/password", json=body, headers=headers)
        assert_error(refused, 429, "rate_limited")
        assert retry_after(refused) > 0
        assert_error(await sign_in(api.client, "victim", "victim-password"), 429, "rate_limited")


@pytest.mark.redis
async def test_redis_shares_counts_between_app_instances(database_url: str, tmp_path: Path) -> None:
    require_service("Redis", REDIS_URL, 6379)
    # A secret of its own keys this test's counters apart from other runs on the same Redis.
    overrides: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "jwt_secret": TEST_SECRET + uuid.uuid4().hex,
        "embedded_workers": False,
        "auth": {"login_failures_per_username": "4/15 minutes"},
    }
    first = create_app(make_settings(database_url, tmp_path / "data", **overrides))
    second = create_app(make_settings(database_url, tmp_path / "data", **overrides))
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first), base_url="http://cairn.test"
        ) as one,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second), base_url="http://cairn.test"
        ) as two,
    ):
        await Api(one).user("victim")
        for client in (one, two, one, two):
            assert_error(await sign_in(client, "victim", "wrong-password"), 401)
        for client in (one, two):
            refused = await sign_in(client, "victim", "victim-password")
            assert_error(refused, 429, "rate_limited")
            assert retry_after(refused) > 0
        # Exactly one "throttled" entry between the two processes.
        throttled = [
            e for e in await global_entries(first) if details(e).get("reason") == "throttled"
        ]
        assert len(throttled) == 1
