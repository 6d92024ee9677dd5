"""Chat and the OpenAI-compatible API refuse sizes out of range (422), never overflow."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.kit.bounds import MAX_REQUESTED_TOKENS, MAX_TOP_K
from tests.conftest import Api, assert_error
from tests.kit.test_bounds import HUGE


@pytest.fixture
async def viewer(api: Api) -> dict[str, str]:
    await api.tenant("t1")
    return await api.user("vi", t1="viewer")


@pytest.mark.parametrize(
    ("name", "ceiling"), [("top_k", MAX_TOP_K), ("max_new_tokens", MAX_REQUESTED_TOKENS)]
)
async def test_chat_sizes_are_bounded(
    client: httpx.AsyncClient, viewer: dict[str, str], name: str, ceiling: int
) -> None:
    for value in (ceiling + 1, *HUGE):
        body: dict[str, Any] = {"question": "vacation?", name: value}
        response = await client.post("/api/v1/tenants/t1/chat", json=body, headers=viewer)
        assert_error(response, 422, "validation_error")
        assert response.json()["error"]["details"][0]["loc"] == ["body", name]


@pytest.mark.parametrize(
    ("name", "ceiling"),
    [
        ("max_tokens", MAX_REQUESTED_TOKENS),
        ("max_completion_tokens", MAX_REQUESTED_TOKENS),
        ("n", 128),
        ("top_k", MAX_TOP_K),
    ],
)
async def test_openai_sizes_are_bounded(
    client: httpx.AsyncClient, viewer: dict[str, str], name: str, ceiling: int
) -> None:
    for value in (ceiling + 1, *HUGE):
        body: dict[str, Any] = {
            "model": "cairn:t1",
            "messages": [{"role": "user", "content": "vacation?"}],
            name: value,
        }
        response = await client.post("/v1/chat/completions", json=body, headers=viewer)
        assert_error(response, 422, "validation_error")
        assert response.json()["error"]["details"][0]["loc"] == ["body", name]
