"""Start-up: the first admin's password reaches the console only when Cairn generated it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.main import create_app
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
