"""Per-caller quotas (issue 14 §2): searches, chat questions and uploads per user and tenant, by
role, with 429 + Retry-After past a quota, recovery after the window, and counts shared by two
app instances through Redis. Sign-in throttling (per username and per address, audited when it
trips) is tested in tests/auth/test_throttle.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from app.main import create_app
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import (
    REDIS_URL,
    TEST_SECRET,
    Api,
    assert_error,
    make_settings,
    require_service,
    running_app,
)

Started = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, Api]]]


@pytest.fixture
def started(database_url: str, tmp_path: Path) -> Started:
    """An app with these settings (no ingestion workers, BM25 chat: nothing here needs a
    model), and an Api on it; the echo double answers chat questions."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[FastAPI, Api]]:
        values: dict[str, Any] = {"embedded_workers": False, "chat": {"mode": "bm25"}}
        values.update(overrides)
        settings = make_settings(database_url, tmp_path / "data", **values)
        async with running_app(settings) as (application, api):
            application.state.generator = GeneratorProvider(settings, limited(EchoGenerator()))
            yield application, api

    return start


async def search(api: Api, headers: dict[str, str], slug: str = "hr") -> httpx.Response:
    return await api.client.post(
        f"/api/v1/tenants/{slug}/search",
        json={"query": "vacation days", "mode": "bm25"},
        headers=headers,
    )


async def ask(api: Api, headers: dict[str, str], slug: str = "hr") -> httpx.Response:
    return await api.client.post(
        f"/api/v1/tenants/{slug}/chat",
        json={"question": "How many vacation days?"},
        headers=headers,
    )


async def ask_openai(api: Api, headers: dict[str, str], slug: str = "hr") -> httpx.Response:
    return await api.client.post(
        "/v1/chat/completions",
        json={"model": f"cairn:{slug}", "messages": [{"role": "user", "content": "Parking?"}]},
        headers=headers,
    )


def retry_after(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isdigit(), value
    return int(value)


def refused(response: httpx.Response, quota: str) -> int:
    """The response is a quota refusal in SPEC's error shape; its Retry-After."""
    assert_error(response, 429, "rate_limited")
    assert response.json()["error"]["details"]["quota"] == quota
    seconds = retry_after(response)
    assert seconds >= 1
    return seconds


async def test_search_quota_refuses_then_recovers_after_the_window(started: Started) -> None:
    quotas = {"default": {"search": "3/2 seconds"}}
    async with started(quotas=quotas) as (_, api):
        await api.tenant("hr")
        await api.tenant("eng")
        viewer = await api.user("vi", hr="viewer", eng="viewer")
        other = await api.user("ot", hr="viewer")
        for _ in range(3):
            assert (await search(api, viewer)).status_code == 200
        wait = refused(await search(api, viewer), "search")
        assert wait <= 2
        # Refused requests are not counted, other callers and other tenants have their own.
        refused(await search(api, viewer), "search")
        assert (await search(api, other)).status_code == 200
        assert (await search(api, viewer, "eng")).status_code == 200
        await asyncio.sleep(wait + 0.1)
        assert (await search(api, viewer)).status_code == 200


async def test_api_keys_share_their_owners_budget(started: Started) -> None:
    async with started(quotas={"default": {"search": "2/1 hour"}}) as (_, api):
        await api.tenant("hr")
        owner = await api.user("vi", hr="viewer")
        keys = []
        for name in ("one", "two"):
            minted = await api.client.post("/api/v1/api-keys", json={"name": name}, headers=owner)
            assert minted.status_code == 201, minted.text
            keys.append({"Authorization": f"Bearer {minted.json()['key']}"})
        assert (await search(api, keys[0])).status_code == 200
        assert (await search(api, owner)).status_code == 200
        # Minting another key buys no more searches.
        assert refused(await search(api, keys[1]), "search") > 60
        refused(await search(api, owner), "search")


async def test_quotas_follow_the_role(started: Started) -> None:
    quotas = {
        "default": {"upload": "1/1 hour"},
        "roles": {"admin": {"upload": "unlimited"}, "guest": {"search": "1/1 hour"}},
    }
    async with started(quotas=quotas) as (_, api):
        await api.tenant("hr")
        editor = await api.user("ed", hr="editor")
        admin = await api.user("ad", hr="admin")
        guest = await api.user("gu", hr="guest")

        async def upload(headers: dict[str, str], name: str) -> httpx.Response:
            return await api.client.post(
                "/api/v1/tenants/hr/documents",
                files={"file": (f"{name}.txt", f"{name} handbook text".encode())},
                headers=headers,
            )

        assert (await upload(editor, "first")).status_code == 202
        assert refused(await upload(editor, "second"), "upload") > 60
        for n in range(3):
            assert (await upload(admin, f"bulk{n}")).status_code == 202
        listed = await api.client.get("/api/v1/tenants/hr/documents", headers=admin)
        assert listed.json()["total"] == 4  # the refused upload left nothing behind
        assert (await search(api, guest)).status_code == 200
        refused(await search(api, guest), "search")
        assert (await search(api, editor)).status_code == 200  # the default: 120/minute


async def test_chat_quota_counts_both_chat_apis_per_minute_and_per_day(started: Started) -> None:
    quotas = {"default": {"chat": "2/2 seconds; 3/1 day"}}
    async with started(quotas=quotas) as (_, api):
        await api.tenant("hr")
        viewer = await api.user("vi", hr="viewer")
        assert (await ask(api, viewer)).status_code == 200
        assert (await ask_openai(api, viewer)).status_code == 200
        wait = refused(await ask(api, viewer), "chat")
        assert wait <= 2
        refused(await ask_openai(api, viewer), "chat")
        await asyncio.sleep(wait + 0.1)
        assert (await ask_openai(api, viewer)).status_code == 200
        # The day's three are used: the refusal names a wait of most of a day.
        assert refused(await ask(api, viewer), "chat") > 3600


async def test_quotas_can_be_switched_off(started: Started) -> None:
    async with started(quotas={"enabled": False, "default": {"search": "1/1 hour"}}) as (_, api):
        await api.tenant("hr")
        viewer = await api.user("vi", hr="viewer")
        for _ in range(3):
            assert (await search(api, viewer)).status_code == 200


@pytest.mark.redis
async def test_redis_shares_quota_counts_between_app_instances(
    database_url: str, tmp_path: Path
) -> None:
    require_service("Redis", REDIS_URL, 6379)
    overrides: dict[str, Any] = {
        "redis_url": REDIS_URL,
        # Counters are keyed with the JWT secret: this test's never meet another run's.
        "jwt_secret": TEST_SECRET + uuid.uuid4().hex,
        "cache": {"key_prefix": f"cairn-test-{uuid.uuid4().hex}"},
        "embedded_workers": False,
        "chat": {"mode": "bm25"},
        "quotas": {"default": {"search": "4/3 seconds", "chat": "2/1 hour"}},
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
        for application in (first, second):
            application.state.generator = GeneratorProvider(
                application.state.settings, limited(EchoGenerator())
            )
        api_one, api_two = Api(one), Api(two)
        await api_one.tenant("hr")
        viewer = await api_one.user("vi", hr="viewer")
        for api in (api_one, api_two, api_one, api_two):
            assert (await search(api, viewer)).status_code == 200
        wait = 0
        for api in (api_one, api_two):
            wait = max(wait, refused(await search(api, viewer), "search"))
        assert (await ask(api_one, viewer)).status_code == 200
        assert (await ask_openai(api_two, viewer)).status_code == 200
        refused(await ask(api_two, viewer), "chat")
        refused(await ask_openai(api_one, viewer), "chat")
        # The window passes for both processes at once.
        await asyncio.sleep(wait + 0.1)
        assert (await search(api_two, viewer)).status_code == 200
        assert (await search(api_one, viewer)).status_code == 200


@pytest.mark.parametrize("bad", ["lots", "0/minute", "10/minute; often", ""])
def test_a_quota_that_does_not_parse_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="quota"):
        Settings(quotas={"roles": {"viewer": {"chat": bad}}})


def test_roles_fall_back_to_the_default_key_by_key() -> None:
    quotas = Settings(quotas={"roles": {"viewer": {"chat": "Unlimited"}}}).quotas
    assert quotas.quota("viewer", "chat") == "Unlimited"
    assert quotas.quota("viewer", "search") == quotas.default.search
    assert quotas.quota("admin", "upload") == "unlimited"
    assert quotas.quota(None, "chat") == "20/minute; 500/day"
