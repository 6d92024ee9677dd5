"""Search filters and sizes out of range are 422, not an overflow."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Api, assert_error
from tests.kit.test_bounds import EDGE_DATES, HUGE

SEARCH = "/api/v1/tenants/t1/search"


@pytest.fixture
async def viewer(api: Api) -> dict[str, str]:
    await api.tenant("t1")
    return await api.user("vi", t1="viewer")


@pytest.mark.parametrize("name", ["uploaded_after", "uploaded_before"])
@pytest.mark.parametrize("value", [*EDGE_DATES, "1969-12-31T23:59:59Z", "9000-01-01T00:00:01Z"])
async def test_dates_at_the_calendars_edges_are_422(
    client: httpx.AsyncClient, viewer: dict[str, str], name: str, value: str
) -> None:
    body: dict[str, Any] = {"query": "vacation", "filters": {name: value}}
    response = await client.post(SEARCH, json=body, headers=viewer)
    assert_error(response, 422, "validation_error")
    assert response.json()["error"]["details"][0]["loc"] == ["body", "filters", name]


async def test_dates_in_range_are_accepted(
    client: httpx.AsyncClient, viewer: dict[str, str]
) -> None:
    filters = {
        "uploaded_after": "1970-01-01T00:00:00",
        "uploaded_before": "8999-06-30T23:00:00-05:00",
    }
    response = await client.post(
        SEARCH, json={"query": "vacation", "filters": filters}, headers=viewer
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("top_k", HUGE)
async def test_a_huge_top_k_is_422(
    client: httpx.AsyncClient, viewer: dict[str, str], top_k: int
) -> None:
    response = await client.post(SEARCH, json={"query": "x", "top_k": top_k}, headers=viewer)
    assert_error(response, 422, "validation_error")
