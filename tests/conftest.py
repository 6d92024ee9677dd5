"""Shared fixtures: a migrated database per test (SQLite and PostgreSQL), the app, API helpers.

Each database is cloned from a template migrated once per run, so every run exercises the
migrations and every test still starts from a clean database. PostgreSQL tests skip with a
visible reason when the server does not answer, unless CAIRN_REQUIRE_SERVICES=1 (CI), where
they fail instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from app.generation.bundled import BUNDLED_MODELS, ensure_bundled_gguf  # noqa: E402
from app.kit.migrate import upgrade  # noqa: E402
from app.kit.public_ids import configure_public_ids  # noqa: E402
from app.kit.settings import GeneratorSettings, Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from tests.generation.tiny_models import build_tiny_deepseek  # noqa: E402

POSTGRES_URL = os.environ.get(
    "CAIRN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CAIRN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("CAIRN_REQUIRE_SERVICES") == "1"
ADMIN_PASSWORD = "admin-password-for-tests"
TEST_SECRET = "test-secret-" + "x" * 40
TEST_AUDIT_SECRET = TEST_SECRET + "-audit"
# Every test app uses this audit secret, so ids are readable (tests/helpers.py) before any app
# exists, e.g. in Hypothesis strategies.
configure_public_ids(TEST_AUDIT_SECRET)


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, port: int) -> None:
    """Skip (or, in CI, fail) when a service the test needs does not answer."""
    if _answers(url, port):
        return
    message = f"{name} is not answering at {url}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (CAIRN_REQUIRE_SERVICES=1)")
    pytest.skip(message + "; start it to run this test")


@dataclass
class DatabaseFactory:
    """Hands out fresh, migrated databases of one backend."""

    backend: str
    template: str
    tmp: Path
    counter: itertools.count[int]

    async def new(self) -> str:
        n = next(self.counter)
        if self.backend == "sqlite":
            path = self.tmp / f"db{n}.sqlite"
            shutil.copyfile(self.template, path)
            return f"sqlite+aiosqlite:///{path}"
        name = f"cairn_t_{os.getpid()}_{n}"
        await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return str(make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False))

    async def drop(self, url: str) -> None:
        if self.backend == "postgres":
            name = make_url(url).database
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def in_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking call that starts its own event loop (Alembic, asyncio.run) off this one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def _pg_admin_sync(sql: str) -> None:
    asyncio.run(_pg_admin(sql))


async def _pg_admin(sql: str) -> None:
    import asyncpg

    url = make_url(POSTGRES_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# `make test` runs the suite on several pytest-xdist workers (`--dist loadgroup`). Tests that
# share something a parallel run cannot share run on one worker, one after another.
_SHARED_FIXTURES = {
    # One conversion and one load of the bundled model per run, not one per worker.
    "bundled_gguf": "bundled-model",
    "models_dir": "bundled-model",
}


def _xdist_group(item: pytest.Item) -> str | None:
    names = getattr(item, "fixturenames", ())
    for name in names:
        if name in _SHARED_FIXTURES:
            return _SHARED_FIXTURES[name]
    if item.get_closest_marker("redis") is not None:
        # They FLUSHDB the databases CAIRN_TEST_REDIS_URL and CAIRN_TEST_REDIS_BROKER_URL name.
        return "redis"
    # A module- or class-scoped fixture is built once, and its tests may build on each other
    # (tests/web/test_browser.py walks one server through a story): keep the module together.
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs if info is not None else {}
    for name in names:
        if any(d.scope in ("module", "class", "package") for d in definitions.get(name, ())):
            return "module:" + item.nodeid.split("::", 1)[0]
    return None


def pytest_itemcollected(item: pytest.Item) -> None:
    # As each test is collected: pytest-xdist reads the groups in its own
    # pytest_collection_modifyitems, which may run before one of ours.
    group = _xdist_group(item)
    if group is not None:
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def sqlite_factory(tmp_path_factory: pytest.TempPathFactory) -> DatabaseFactory:
    tmp = tmp_path_factory.mktemp("sqlite")
    template = tmp / "template.sqlite"
    in_thread(upgrade, f"sqlite+aiosqlite:///{template}")
    return DatabaseFactory("sqlite", str(template), tmp, itertools.count())


@pytest.fixture(scope="session")
def postgres_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    require_service("PostgreSQL", POSTGRES_URL, 5432)
    template = f"cairn_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    in_thread(_pg_admin_sync, f'CREATE DATABASE "{template}"')
    url = make_url(POSTGRES_URL).set(database=template).render_as_string(hide_password=False)
    in_thread(upgrade, url)
    yield DatabaseFactory("postgres", template, tmp_path_factory.mktemp("pg"), itertools.count())
    in_thread(_pg_admin_sync, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    factory: DatabaseFactory = request.getfixturevalue(f"{backend}_factory")
    url = await factory.new()
    yield url
    await factory.drop(url)


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "audit_secret": TEST_AUDIT_SECRET,
        "admin_password": ADMIN_PASSWORD,
        # The cheapest argon2id RFC 9106 allows: tests hash dozens of passwords.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://cairn.test"
    ) as c:
        yield c


@asynccontextmanager
async def running_app(
    settings: Settings, *, client_address: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[tuple[FastAPI, Api]]:
    """The app for `settings` with its lifespan running, and an Api on an in-process client
    connecting from `client_address` (for tests that start apps with their own settings)."""
    application = create_app(settings)
    transport = httpx.ASGITransport(app=application, client=client_address)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=transport, base_url="http://cairn.test") as http,
    ):
        yield application, Api(http)


class Api:
    """Small factories over the HTTP API, so tests read like a person using Cairn."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self._admin: dict[str, str] | None = None

    async def token(self, username: str, password: str) -> str:
        response = await self.client.post(
            "/api/v1/auth/token", data={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def headers(self, username: str, password: str | None = None) -> dict[str, str]:
        token = await self.token(username, password or f"{username}-password")
        return {"Authorization": f"Bearer {token}"}

    async def admin(self) -> dict[str, str]:
        if self._admin is None:
            self._admin = await self.headers("admin", ADMIN_PASSWORD)
        return self._admin

    async def tenant(self, slug: str, *, join: bool = False) -> dict[str, Any]:
        """Create a tenant as the platform admin. Without `join` the platform admin takes no
        role in it (as every test before creators became admins assumed), so the roles a test
        gives are the only ones there; tests/tenants/test_creation.py covers joining."""
        response = await self.client.post(
            "/api/v1/tenants",
            json={"slug": slug, "name": slug.upper(), "join": join},
            headers=await self.admin(),
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def user(self, username: str, **roles: str) -> dict[str, str]:
        """Create a user (password '<username>-password') with roles per tenant; its headers."""
        response = await self.client.post(
            "/api/v1/users",
            json={"username": username, "password": f"{username}-password"},
            headers=await self.admin(),
        )
        assert response.status_code == 201, response.text
        for slug, role in roles.items():
            await self.member(slug, username, role)
        return await self.headers(username)

    async def member(self, slug: str, username: str, role: str) -> None:
        response = await self.client.put(
            f"/api/v1/tenants/{slug}/members/{username}",
            json={"role": role},
            headers=await self.admin(),
        )
        assert response.status_code == 200, response.text


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The response is SPEC.md's error shape with this status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


# Generation models: tiny DeepSeek models (fast) and the bundled Qwen GGUF (assembled once per
# run; loading it through transformers is `slow`).


@pytest.fixture(scope="session")
def tiny_deepseek_v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_deepseek(tmp_path_factory.mktemp("deepseek-v3"), "v3")


@pytest.fixture(scope="session")
def tiny_deepseek_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_deepseek(tmp_path_factory.mktemp("deepseek-v2"), "v2")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the bundled GGUF and its converted checkpoint go. CAIRN_TEST_MODELS_DIR keeps
    them between runs (the conversion takes a minute on two cores)."""
    kept = os.environ.get("CAIRN_TEST_MODELS_DIR")
    if kept:
        path = Path(kept)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def bundled_gguf(models_dir: Path) -> Path:
    """The default bundled model's GGUF (`generator.bundled`), assembled once."""
    return ensure_bundled_gguf(models_dir, BUNDLED_MODELS[GeneratorSettings().bundled])
