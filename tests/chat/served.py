"""A live Cairn server with two tenants and real ingested documents, for socket clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app.generation.base import Generator
from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from app.main import create_app
from tests.chat.live import live_server
from tests.conftest import Api
from tests.documents.helpers import wait_for

DOCS = {
    "vacation": (
        "hr",
        "vacation.txt",
        "Vacation policy: every employee receives twenty five days of paid vacation per year.",
    ),
    "rotation": (
        "eng",
        "rotation.txt",
        "Vacation freeze and credentials: the production database password is rotated every "
        "ninety days by the platform team, and nobody takes vacation during the rotation week.",
    ),
}


@dataclass
class Served:
    url: str
    app: FastAPI
    client: httpx.AsyncClient
    users: dict[str, dict[str, str]]
    keys: dict[str, str]
    docs: dict[str, int]

    def use(self, generator: Generator) -> None:
        """Answer with this generator from now on."""
        self.app.state.generator = GeneratorProvider(self.app.state.settings, generator)


@asynccontextmanager
async def serve(settings: Settings, generator: Generator | None = None) -> AsyncIterator[Served]:
    app = create_app(settings)
    # A real model is loaded on the first question and waited for (as `cairn ask` does): the
    # API's own provider answers 503 generator_preparing while a slow box loads it, which
    # tests/chat/test_generator_preparing.py covers.
    app.state.generator = GeneratorProvider(settings, generator)
    with live_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            api = Api(client)
            await api.tenant("hr")
            await api.tenant("eng")
            users = {
                "viewer": await api.user("vi", hr="viewer"),
                "eng": await api.user("en", eng="admin"),
                "both": await api.user("both", hr="viewer", eng="viewer"),
                "guest": await api.user("gu", hr="guest"),
            }
            uploader = {"hr": await api.user("ed", hr="editor"), "eng": users["eng"]}
            docs: dict[str, int] = {}
            for name, (slug, filename, content) in DOCS.items():
                response = await client.post(
                    f"/api/v1/tenants/{slug}/documents",
                    files={"file": (filename, content.encode())},
                    headers=uploader[slug],
                )
                assert response.status_code == 202, response.text
                docs[name] = response.json()["id"]
                ready = await wait_for(client, uploader[slug], slug, docs[name])
                assert ready["status"] == "ready", ready
            keys = {name: await _api_key(client, users[name]) for name in users}
            yield Served(url, app, client, users, keys, docs)


async def _api_key(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/api/v1/api-keys", json={"name": "chat"}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return str(body["key"])
