"""Start-up: the first admin's password reaches the console only when Cairn generated it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.container import Container
from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from app.main import create_app
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import ADMIN_PASSWORD, Api, make_settings


async def test_a_configured_admin_password_is_not_echoed(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(make_settings(database_url, tmp_path / "data"))
    async with app.router.lifespan_context(app):
        pass
    out = capsys.readouterr().out
    assert "Created platform admin 'admin' with the configured password" in out
    assert ADMIN_PASSWORD not in out


async def test_a_generated_admin_password_is_shown_once(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(make_settings(database_url, tmp_path / "data", admin_password=None))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        out = capsys.readouterr().out
        found = re.search(r"Created platform admin 'admin' with password: (\S+)", out)
        assert found is not None, out
        assert await Api(client).token("admin", found.group(1))
    restarted = create_app(make_settings(database_url, tmp_path / "data", admin_password=None))
    async with restarted.router.lifespan_context(restarted):
        pass
    assert "Created platform admin" not in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_app_state_holds_one_container_and_the_old_names_alias_onto_it(
    settings: Settings,
) -> None:
    app = create_app(settings)
    scripted = GeneratorProvider(settings, limited(EchoGenerator()))
    # Assigned before the lifespan (as tests do): written through to the container.
    app.state.generator = scripted
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        container = app.state.container
        assert isinstance(container, Container)
        assert list(app.state._state) == ["container"]
        assert app.state.runtime is container
        assert app.state.generator is container.generator is scripted
        assert app.state.database is container.database
        assert app.state.settings is container.settings is settings
        assert app.state.retriever is container.retriever
        assert app.state.content_store is container.store
        assert app.state.worker_pool is container.worker_pool is not None
        # Written through: a request sees what a test swapped in.
        other = GeneratorProvider(settings, limited(EchoGenerator()))
        app.state.generator = other
        assert container.generator is other
        assert (await http.get("/readyz")).status_code == 200
        assert list(app.state._state) == ["container"]
    assert container.worker_pool is None  # stopped with the lifespan


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_container_builds_its_costly_parts_only_when_reached(settings: Settings) -> None:
    """A command that only needs the database loads no model and opens no shard cache."""
    container = Container(settings)
    try:
        async with container.database.read_sessionmaker() as session:
            assert await session.scalar(text("select 1")) == 1
        assert {"retriever", "enforcer", "dispatcher"}.isdisjoint(vars(container))
        assert container._generator is None
        assert container._embedder is None
        # Reached: built once, and the process's index writes reach its shard cache.
        retriever = container.retriever
        assert container.retriever is retriever
        assert retriever.cache in container.indexer.readers
        assert not container.generator.loaded
        assert container.generator is container.generator
    finally:
        await container.close()
