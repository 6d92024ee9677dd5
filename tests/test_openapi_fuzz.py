"""Schema-driven fuzzing: every operation in the OpenAPI document, no response >= 500.

Schemathesis turns each operation of the app's OpenAPI document into requests, twice over:
its deterministic coverage cases (each constraint's boundaries, wrong types, missing and
unexpected fields) and `EXAMPLES` Hypothesis cases, schema-valid ("positive") and
schema-violating ("negative"). Every operation runs once as the admin of tenant t1 and once
with no credentials (Schemathesis' negative cases also drop the admin's credentials at times),
and every response must be below 500. The Hypothesis run is derandomized, so CI replays the
same cases every time.

So that generated requests reach code past the tenant lookup, most of them are aimed at t1:
the `tenant` path parameter, `username` (a member of t1), a `document_id` (t1's ingested
document, whatever shape its id has), the OpenAI-compatible `model` (`cairn:t1`, with a
user's question last), a chat without `session_id` (a new one) and an upload with text. Some
integers are swapped for ones past int64 and some times for times at the calendar's edges,
the inputs that once overflowed into 500s.

Nothing is excluded. Streamed chat (SSE) answers are read to their end: the echo generator
finishes at once, so a stream cannot stall the run.

One SQLite database and one app (with its lifespan) serve the module: about a minute on two
cores. CAIRN_FUZZ_EXAMPLES sets the Hypothesis cases per operation for a longer local run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.python import asgi

from app.generation.provider import GeneratorProvider
from app.main import create_app
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import ADMIN_PASSWORD, DatabaseFactory, make_settings

EXAMPLES = int(os.environ.get("CAIRN_FUZZ_EXAMPLES", "25"))
TENANT = "t1"
ADMIN = "t1admin"
MEMBER = "t1viewer"
DOCUMENT = b"Vacation policy: every employee receives twenty five days of paid vacation."
HUGE_INTEGERS = (2**63, -(2**63) - 1, 10**30)
EDGE_TIMES = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00")
CALLERS = ("tenant admin", "anonymous")

pytestmark = pytest.mark.fuzz


@dataclass
class Fuzzed:
    schema: BaseSchema
    callers: dict[str, dict[str, str]]
    document_id: str


def _login(client: asgi.ASGIClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _populate(client: asgi.ASGIClient) -> tuple[dict[str, str], str]:
    """Tenant t1 with an admin, a viewer and one ingested document; the admin's headers."""
    platform = _login(client, "admin", ADMIN_PASSWORD)
    created = client.post("/api/v1/tenants", json={"slug": TENANT, "name": "T1"}, headers=platform)
    assert created.status_code == 201, created.text
    for username, role in ((ADMIN, "admin"), (MEMBER, "viewer")):
        password = f"{username}-password"
        response = client.post(
            "/api/v1/users", json={"username": username, "password": password}, headers=platform
        )
        assert response.status_code == 201, response.text
        response = client.put(
            f"/api/v1/tenants/{TENANT}/members/{username}", json={"role": role}, headers=platform
        )
        assert response.status_code == 200, response.text
    headers = _login(client, ADMIN, f"{ADMIN}-password")
    uploaded = client.post(
        f"/api/v1/tenants/{TENANT}/documents",
        files={"file": ("policy.txt", DOCUMENT)},
        headers=headers,
    )
    assert uploaded.status_code == 202, uploaded.text
    document_id = str(uploaded.json()["id"])
    deadline = time.monotonic() + 120
    while True:
        status = client.get(f"/api/v1/tenants/{TENANT}/documents/{document_id}", headers=headers)
        if status.json().get("status") in ("ready", "failed"):
            assert status.json()["status"] == "ready", status.text
            return headers, document_id
        assert time.monotonic() < deadline, status.text
        time.sleep(0.2)


@pytest.fixture(scope="module")
def fuzzed(
    sqlite_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    tmp = tmp_path_factory.mktemp("fuzz")
    shutil.copyfile(sqlite_factory.template, tmp / "db.sqlite")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'db.sqlite'}", tmp / "data")
    app = create_app(settings)
    # Set before the lifespan starts, which then keeps it: chat loads no real model.
    app.state.generator = GeneratorProvider(settings, limited(EchoGenerator()))
    # Schemathesis runs the app's lifespan on its own event-loop thread and sends every request
    # of this module through that loop; the teardown ends the lifespan.
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        with asgi.get_client(app) as client:
            headers, document_id = _populate(client)
        yield Fuzzed(schema, {"tenant admin": headers, "anonymous": {}}, document_id)
    finally:
        asgi.shutdown_lifespans()


def _aim(case: Case, document_id: str, chosen: Any) -> None:
    """Point the case at t1 where `chosen(label)` says so."""
    path = case.path_parameters if case.path_parameters is not None else {}
    for name, value in (("tenant", TENANT), ("username", MEMBER), ("document_id", document_id)):
        if name in path and chosen(f"aim {name}"):
            path[name] = value
    body = case.body
    if isinstance(body, dict) and "model" in body and chosen("aim model"):
        body["model"] = f"cairn:{TENANT}"
    if not isinstance(body, dict):
        return
    if isinstance(body.get("messages"), list) and chosen("ask"):
        body["messages"].append({"role": "user", "content": "How many vacation days?"})
    if "session_id" in body and chosen("new session"):
        del body["session_id"]
    if "file" in body and chosen("aim file"):
        body["file"] = DOCUMENT


def _is_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _stretch(value: Any, data: st.DataObject) -> Any:
    """The value, with some of its integers past int64 and some of its times at the edges."""
    if isinstance(value, dict):
        return {key: _stretch(item, data) for key, item in value.items()}
    if isinstance(value, list):
        return [_stretch(item, data) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        if data.draw(st.integers(0, 3), label="stretch integer") == 0:
            return data.draw(st.sampled_from(HUGE_INTEGERS), label="huge integer")
    elif isinstance(value, str) and _is_time(value):
        if data.draw(st.integers(0, 2), label="stretch time") == 0:
            return data.draw(st.sampled_from(EDGE_TIMES), label="edge time")
    return value


def _send(case: Case, headers: dict[str, str]) -> str | None:
    """Send the case; a description of the failure when the answer is a server error."""
    try:
        response = case.call(headers=headers)
    except Exception as exc:  # the app raised past its handlers: a 500 to a client
        return f"{type(exc).__name__}: {exc}"
    if response.status_code < 500:
        return None
    curl = case.as_curl_command(headers=headers)
    return f"{response.status_code} {response.text[:300]}\n{curl}"


def _coverage(
    schema: BaseSchema, operation: APIOperation, headers: dict[str, str], document_id: str
) -> list[str]:
    """Schemathesis' coverage cases of the operation, every other one aimed at t1."""
    config = schema.config.generation_for(operation=operation, phase="coverage")
    cases = schema.iter_coverage_cases(
        operation, generation_modes=list(GenerationMode), generation_config=config
    )
    failures = []
    for index, case in enumerate(cases):
        if index % 2 == 0:
            _aim(case, document_id, lambda _label: True)
        if (failure := _send(case, headers)) is not None:
            failures.append(f"{operation.label} (coverage): {failure}")
    return failures


def _fuzz(operation: APIOperation, headers: dict[str, str], document_id: str) -> list[str]:
    """EXAMPLES Hypothesis cases of the operation; the first server error, if any."""
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        # No shrinking: a failing CI run reports its first case (with a curl line) at once.
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        _aim(case, document_id, lambda label: data.draw(st.integers(0, 3), label=label) > 0)
        if case.query:
            case.query = _stretch(case.query, data)
        if isinstance(case.body, dict | list):
            case.body = _stretch(case.body, data)
        failure = _send(case, headers)
        if failure is not None:
            raise AssertionError(failure)

    try:
        run()
    except AssertionError as exc:
        return [f"{operation.label}: {exc}"]
    return []


@pytest.mark.parametrize("caller", CALLERS)
def test_no_operation_answers_a_server_error(fuzzed: Fuzzed, caller: str) -> None:
    operations = [result.ok() for result in fuzzed.schema.get_all_operations()]
    assert len(operations) >= 30, [op.label for op in operations]
    headers = fuzzed.callers[caller]
    failures: list[str] = []
    for operation in operations:
        failures += _coverage(fuzzed.schema, operation, headers, fuzzed.document_id)
        failures += _fuzz(operation, headers, fuzzed.document_id)
    assert not failures, f"{len(failures)} server errors:\n\n" + "\n\n".join(failures[:20])
