"""Casbin decisions without parsing the matcher per decision (app/kit/authz_matcher.py): the
same answers as pycasbin's own enforcer, and no `ast.parse` on a request's path, where a parse
racing another thread's fails on CPython 3.11 and answered 500."""

from __future__ import annotations

import ast
import csv
import itertools
from typing import Any

import casbin
import pytest

from app.kit.authz import MODEL_PATH, POLICY_PATH
from app.kit.authz_matcher import CachedMatcherEnforcer
from tests.conftest import Api


async def _loaded(enforcer: Any) -> Any:
    with POLICY_PATH.open(newline="") as handle:
        for row in csv.reader(handle, skipinitialspace=True):
            if row and row[0] == "p":
                await enforcer.add_policy(*row[1:])
    for user, role, domain in [
        ("user:1", "admin", "tenant:1"),
        ("user:2", "viewer", "tenant:1"),
        ("user:2", "editor", "tenant:2"),
        ("user:3", "platform_admin", "platform"),
    ]:
        await enforcer.add_grouping_policy(user, role, domain)
    return enforcer


async def test_decides_exactly_as_pycasbin() -> None:
    ours = await _loaded(CachedMatcherEnforcer(str(MODEL_PATH)))
    theirs = await _loaded(casbin.AsyncEnforcer(str(MODEL_PATH)))
    objects = {row[2] for row in theirs.get_policy()} | {"nothing"}
    actions = {row[3] for row in theirs.get_policy()} | {"nothing"}
    requests = itertools.product(
        ["user:1", "user:2", "user:3", "user:4"],
        ["tenant:1", "tenant:2", "platform"],
        sorted(objects),
        sorted(actions),
    )
    decisions = [(r, ours.enforce(*r), theirs.enforce(*r)) for r in requests]
    assert any(mine for _, mine, _ in decisions)
    assert [(r, mine) for r, mine, _ in decisions] == [(r, pc) for r, _, pc in decisions]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_requests_never_parse_python(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    await api.tenant("ops")
    headers = await api.user("reader", ops="viewer")
    assert (
        await api.client.get("/api/v1/tenants/ops/documents", headers=headers)
    ).status_code == 200

    def racing_parse(*args: Any, **kwargs: Any) -> Any:
        raise SystemError("AST constructor recursion depth mismatch (before=192, after=37)")

    monkeypatch.setattr(ast, "parse", racing_parse)
    response = await api.client.get("/api/v1/tenants/ops/documents", headers=headers)
    assert response.status_code == 200, response.text
    response = await api.client.post(
        "/api/v1/tenants/ops/search", json={"query": "pumps"}, headers=headers
    )
    assert response.status_code == 200, response.text
