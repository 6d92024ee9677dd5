"""`cairn serve` runs uvicorn with the slow-client protocol, the connection limit and no
proxy-header handling of uvicorn's own (whose default believes loopback peers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.cli import app as cli_app
from app.kit.settings import ServerSettings
from app.kit.slow_clients import BoundedH11Protocol, ConnectionLimits
from tests.conftest import make_settings


def test_cairn_serve_runs_the_bounded_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = ServerSettings(header_timeout_seconds=3, max_connections=40)
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'cairn.db'}", tmp_path)
    settings = settings.model_copy(update={"server": server})
    ran: list[uvicorn.Config] = []

    def run(self: uvicorn.Server, *args: Any, **kwargs: Any) -> None:
        ran.append(self.config)
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr("app.cli._settings", lambda: settings)
    monkeypatch.setattr("app.kit.logs.configure_logging", lambda _settings: None)
    # uvicorn reads this when forwarded_allow_ips is not given; Cairn never lets it apply.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")

    result = CliRunner().invoke(cli_app, ["serve", "--no-migrate", "--no-preload"])

    assert result.exit_code == 0, result.output
    (config,) = ran
    assert config.proxy_headers is False
    assert config.forwarded_allow_ips == []
    assert config.limit_concurrency == 40
    assert config.access_log is False
    assert isinstance(config.http, type)
    assert issubclass(config.http, BoundedH11Protocol)
    assert config.http.limits == ConnectionLimits.from_settings(server)
    config.load()
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)
