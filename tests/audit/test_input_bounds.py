"""The audit list's time filters: bounded, and a time without a zone is UTC."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Api, assert_error
from tests.kit.test_bounds import EDGE_DATES

AUDIT = "/api/v1/tenants/t1/audit"


@pytest.mark.parametrize("name", ["since", "until"])
async def test_dates_at_the_calendars_edges_are_422(
    api: Api, client: httpx.AsyncClient, name: str
) -> None:
    await api.tenant("t1")
    admin = await api.user("boss", t1="admin")
    for value in (*EDGE_DATES, "1969-12-31T23:59:59Z", "9000-01-01T00:00:01Z"):
        response = await client.get(AUDIT, params={name: value}, headers=admin)
        assert_error(response, 422, "validation_error")
        assert response.json()["error"]["details"][0]["loc"] == ["query", name]


async def test_times_with_and_without_a_zone_filter(api: Api, client: httpx.AsyncClient) -> None:
    await api.tenant("t1")
    admin = await api.user("boss", t1="admin")
    everything = await client.get(AUDIT, headers=admin)
    assert everything.status_code == 200, everything.text
    assert everything.json()["total"] > 0
    # A naive time used to reach the UTC column as is, which refused it (500).
    for since, until in (
        ("2000-01-01T00:00:00", "8999-01-01T00:00:00"),
        ("1999-12-31T19:00:00-05:00", "8999-01-01T09:00:00+09:00"),
    ):
        response = await client.get(AUDIT, params={"since": since, "until": until}, headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["total"] == everything.json()["total"]
    later = await client.get(AUDIT, params={"since": "8000-01-01T00:00:00"}, headers=admin)
    assert later.status_code == 200, later.text
    assert later.json()["total"] == 0
