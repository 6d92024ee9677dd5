"""Per-caller quotas (issue 14 §2): searches, chat questions and uploads per user and tenant, by
role, with 429 + Retry-After past a quota, recovery after the window, and counts shared by two
app instances through Redis. Issue 25: uploads count files and bytes, the defaults let a
department's first import through, a refused upload says what to do, `cairn ingest` is not
counted. Sign-in throttling (per username and per address, audited when it
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

from app.documents.bulk import bulk_ingest
from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings, parse_byte_quota, parse_quota
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
        refusal = await upload(editor, "second")
        assert refused(refusal, "upload") > 60
        assert refusal.json()["error"]["details"]["limit"] == "1/1 hour"
        says_what_to_do(refusal)
        for n in range(3):
            assert (await upload(admin, f"bulk{n}")).status_code == 202
        listed = await api.client.get("/api/v1/tenants/hr/documents", headers=admin)
        assert listed.json()["total"] == 4  # the refused upload left nothing behind
        assert (await search(api, guest)).status_code == 200
        refused(await search(api, guest), "search")
        assert (await search(api, editor)).status_code == 200  # the default: 120/minute


def says_what_to_do(response: httpx.Response) -> None:
    """A refused upload names when to come back and the ways to import more at once."""
    message = response.json()["error"]["message"]
    assert f"try again in {retry_after(response)} seconds" in message
    assert "tenant admin" in message
    assert "cairn ingest" in message
    assert "upload_bytes" in message


async def upload_bytes(api: Api, headers: dict[str, str], name: str, size: int) -> httpx.Response:
    return await api.client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": (f"{name}.txt", (name + " ").encode() + b"x" * (size - len(name) - 1))},
        headers=headers,
    )


async def test_an_editor_imports_a_folder_under_the_default_quotas(started: Started) -> None:
    """The issue's import stopped at the 300th upload; the defaults now let an editor's first
    import of a department's folder through (tiny files: nothing is ingested here)."""
    async with started() as (_, api):
        await api.tenant("hr")
        editor = await api.user("ed", hr="editor")
        for n in range(320):
            response = await upload_bytes(api, editor, f"note{n}", 64)
            assert response.status_code == 202, (n, response.text)


async def test_the_upload_quota_counts_bytes(started: Started) -> None:
    async with started(quotas={"default": {"upload_bytes": "1 kB/1 hour"}}) as (_, api):
        await api.tenant("hr")
        editor = await api.user("ed", hr="editor")
        admin = await api.user("ad", hr="admin")
        assert (await upload_bytes(api, editor, "first", 600)).status_code == 202
        refusal = await upload_bytes(api, editor, "second", 600)
        assert refused(refusal, "upload") > 60
        assert refusal.json()["error"]["details"]["limit"] == "1 kB/1 hour of files"
        says_what_to_do(refusal)
        # The refused bytes were not counted: a smaller file still fits in the hour.
        assert (await upload_bytes(api, editor, "third", 300)).status_code == 202
        # Admins' uploads are not limited by default.
        for n in range(3):
            assert (await upload_bytes(api, admin, f"bulk{n}", 900)).status_code == 202


async def test_cairn_ingest_is_not_counted_against_any_quota(
    started: Started, tmp_path: Path
) -> None:
    """The operator's bulk load runs outside the HTTP quotas, whatever they are set to."""
    tight = {"upload": "1/1 hour", "upload_bytes": "1 B/1 hour"}
    quotas = {"default": tight, "roles": {"admin": tight, "platform_admin": tight}}
    folder = tmp_path / "folder"
    folder.mkdir()
    for n in range(3):
        (folder / f"memo{n}.txt").write_text(f"memo {n} about the parking rules")
    async with started(quotas=quotas) as (application, api):
        await api.tenant("hr")
        summary = await bulk_ingest(
            application.state.settings,
            [folder],
            tenant="hr",
            sensitivity="internal",
            tags=None,
            wait=False,
        )
    assert len(summary.queued) == 3, summary.report()
    assert not summary.skipped


def test_the_default_upload_quotas_fit_a_departments_folder() -> None:
    """The issue's public set had 3,633 documents; a department's folder is a few GB."""
    quotas = Settings().quotas
    for role in ("editor", None):
        (files,) = parse_quota(quotas.quota(role, "upload"))
        (size,) = parse_byte_quota(quotas.quota(role, "upload_bytes"))
        assert files.amount >= 3633
        assert size.amount >= 10**9
    for role in ("admin", "platform_admin"):
        assert parse_quota(quotas.quota(role, "upload")) == []
        assert parse_byte_quota(quotas.quota(role, "upload_bytes")) == []


@pytest.mark.parametrize(
    ("text", "amounts"),
    [
        ("2 GB/hour", [2 * 10**9]),
        ("1.5MiB/minute; 10 GB/day", [3 * 2**19, 10**10]),
        ("500/hour", [500]),
        ("Unlimited", []),
    ],
)
def test_byte_quotas_read_units(text: str, amounts: list[int]) -> None:
    assert [item.amount for item in parse_byte_quota(text)] == amounts


@pytest.mark.parametrize("bad", ["2 GB", "2 parsecs/hour", "0 GB/hour", "GB/hour", ""])
def test_a_byte_quota_that_does_not_parse_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="quota"):
        Settings(quotas={"roles": {"editor": {"upload_bytes": bad}}})


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
