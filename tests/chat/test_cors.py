"""Browser chat clients on another origin (NextChat, Open WebUI) need CORS, when configured."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.main import create_app
from tests.conftest import make_settings

ORIGIN = "https://chat.example.org"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


async def preflight(settings_path: Path, database_url: str, **overrides: object) -> httpx.Response:
    app = create_app(make_settings(database_url, settings_path, **overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        return await client.options("/v1/chat/completions", headers=PREFLIGHT)


async def test_configured_origins_may_call_the_api(database_url: str, tmp_path: Path) -> None:
    response = await preflight(
        tmp_path / "data", database_url, cors_origins=[ORIGIN], embedded_workers=False
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_no_cross_origin_access_by_default(database_url: str, tmp_path: Path) -> None:
    response = await preflight(tmp_path / "data", database_url, embedded_workers=False)
    assert "access-control-allow-origin" not in response.headers
