"""GET /readyz while the answer model is prepared: the preparation's stage and percent in the
body; a preloaded generator still preparing is not ready unless `?generator=optional`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.generation.provider import GeneratorProvider
from app.main import create_app
from tests.conftest import assert_error, make_settings
from tests.generation.preparing import BlockedPreparation

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def test_readyz_reports_the_preparation_until_the_generator_is_ready(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        database_url, tmp_path / "data", embedded_workers=False, generator={"preload": True}
    )
    app = create_app(settings)
    with BlockedPreparation(monkeypatch) as blocked:
        async with app.router.lifespan_context(app):
            provider: GeneratorProvider = app.state.generator
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await asyncio.to_thread(blocked.wait_reached)
                # The process is up at once, whatever the model is doing.
                assert (await client.get("/healthz")).status_code == 200

                response = await client.get("/readyz")
                assert_error(response, 503, "not_ready")
                details = response.json()["error"]["details"]
                assert details["checks"]["generator"].startswith("preparing (converting 60%")
                generator = details["generator"]
                assert generator["state"] == "converting"
                assert generator["preparing"] is True
                assert generator["stage_percent"] == 60
                assert 0 < generator["percent"] < 100
                assert generator["eta_seconds"] > 0

                # Ready for search, uploads and the pages meanwhile, for a probe that says so.
                response = await client.get("/readyz", params={"generator": "optional"})
                assert response.status_code == 200, response.text
                assert response.json()["generator"]["state"] == "converting"

                blocked.release()
                await provider.start()
                response = await client.get("/readyz")
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["checks"]["generator"] == "ok"
                assert body["generator"]["state"] == "ready"
                assert body["generator"]["percent"] == 100
                assert body["generator"]["preparing"] is False
    assert blocked.calls == 1


async def test_a_preparation_started_by_a_question_shows_without_preload(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url, tmp_path / "data", embedded_workers=False)
    app = create_app(settings)
    with BlockedPreparation(monkeypatch) as blocked:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                body = (await client.get("/readyz")).json()
                assert body["checks"]["generator"] == "not preloaded"
                assert body["generator"]["state"] == "idle"

                app.state.generator.start()  # what the first question does
                await asyncio.to_thread(blocked.wait_reached)
                response = await client.get("/readyz")
                # Not preloaded: the preparation is reported, and never fails readiness.
                assert response.status_code == 200, response.text
                assert response.json()["generator"]["state"] == "converting"
                assert response.json()["checks"]["generator"].startswith("preparing")
                blocked.release()
                await app.state.generator.start()
