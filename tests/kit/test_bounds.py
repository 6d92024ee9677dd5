"""Numbers and times out of range are validation errors (422), never an overflow (500)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.kit.bounds import EARLIEST, LATEST, MAX_OFFSET, to_bounded_utc
from tests.conftest import Api, assert_error

# Parsable, but at the calendar's edges: converting them to UTC overflows.
EDGE_DATES = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00")
HUGE = (2**63, 10**30)


def test_times_are_converted_to_utc() -> None:
    assert to_bounded_utc(datetime(2024, 5, 1, 12)) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    eastern = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    converted = to_bounded_utc(eastern)
    assert converted == datetime(2024, 5, 1, 17, tzinfo=UTC)
    assert converted.tzinfo is UTC
    assert to_bounded_utc(EARLIEST) == EARLIEST
    assert to_bounded_utc(LATEST) == LATEST


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1969, 12, 31, 23, 59, 59),
        LATEST + timedelta(microseconds=1),
    ],
)
def test_times_out_of_range_are_value_errors(value: datetime) -> None:
    with pytest.raises(ValueError, match="must be between"):
        to_bounded_utc(value)


def _unbounded_numbers(node: Any, where: str, components: dict[str, Any]) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _unbounded_numbers(item, where, components)
        return
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name not in where:  # a recursive model is walked once
            yield from _unbounded_numbers(components[name], f"{where} {name}", components)
        return
    if node.get("type") in ("integer", "number") and not (
        {"maximum", "exclusiveMaximum"} & set(node) and {"minimum", "exclusiveMinimum"} & set(node)
    ):
        yield where
    for key, value in node.items():
        yield from _unbounded_numbers(value, f"{where}.{key}", components)


async def test_every_numeric_input_has_bounds(app: FastAPI) -> None:
    """No parameter or request body of the OpenAPI document takes an unbounded number."""
    document = app.openapi()
    components = document["components"]["schemas"]
    unbounded = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                where = f"{label} {parameter['name']}"
                unbounded += _unbounded_numbers(parameter["schema"], where, components)
            for content in operation.get("requestBody", {}).get("content", {}).values():
                unbounded += _unbounded_numbers(content["schema"], f"{label} body", components)
    assert unbounded == []


async def test_every_offset_is_bounded(app: FastAPI, api: Api, client: httpx.AsyncClient) -> None:
    """Every list operation in the OpenAPI document refuses an offset past MAX_OFFSET."""
    await api.tenant("t1")
    tenant_admin = await api.user("boss", t1="admin")
    platform_admin = await api.admin()
    paged = [
        path
        for path, operations in app.openapi()["paths"].items()
        if any(p["name"] == "offset" for p in operations.get("get", {}).get("parameters", []))
    ]
    assert len(paged) >= 6, paged
    # A document's pages (its chunks) need a document: one that is only queued will do.
    uploaded = await client.post(
        "/api/v1/tenants/t1/documents",
        files={"file": ("one.txt", b"One line of text.")},
        headers=tenant_admin,
    )
    assert uploaded.status_code == 202, uploaded.text
    for template in paged:
        path = template.format(tenant="t1", document_id=uploaded.json()["id"])
        headers = tenant_admin if "{tenant}" in template else platform_admin
        ok = await client.get(path, params={"offset": MAX_OFFSET}, headers=headers)
        assert ok.status_code == 200, (path, ok.text)
        assert ok.json()["items"] == []
        for offset in (MAX_OFFSET + 1, *HUGE):
            response = await client.get(path, params={"offset": offset}, headers=headers)
            assert_error(response, 422, "validation_error")
            assert response.json()["error"]["details"][0]["loc"] == ["query", "offset"]
