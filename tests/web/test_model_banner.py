"""The chat page's banner while the answer model is prepared: the element, the script that
fills it from /readyz, and its words in both languages."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Api
from tests.web.helpers import sign_in


@pytest.fixture
async def viewer(app: FastAPI, api: Api) -> AsyncIterator[httpx.AsyncClient]:
    await api.tenant("hr")
    await api.user("vi", hr="viewer")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cairn.test") as client:
        assert (await sign_in(client, "vi", "vi-password")).status_code == 303
        yield client


def script_messages(page: str) -> dict[str, str]:
    found = re.search(r'<script[^>]*id="messages"[^>]*>(.*?)</script>', page, re.S)
    assert found, "the page carries its script messages"
    messages: dict[str, str] = json.loads(found.group(1))
    return messages


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", "Preparing the answer model: 60%"), ("zh-CN", "正在准备回答模型：60%")],
)
async def test_the_chat_page_has_the_preparation_banner(
    viewer: httpx.AsyncClient, language: str, words: str
) -> None:
    page = await viewer.get("/t/hr/chat", headers={"Accept-Language": language})
    assert page.status_code == 200, page.text[:500]
    assert 'id="model-banner"' in page.text
    messages = script_messages(page.text)
    assert messages["js.preparing"].replace("{percent}", "60") == words
    assert "{percent}" in messages["js.preparing.ask_again"]
    script = (await viewer.get("/static/app.js")).text
    # The banner reads the preparation from /readyz and a 503 generator_preparing restarts it.
    assert "/readyz?generator=optional" in script
    assert '"generator_preparing"' in script
