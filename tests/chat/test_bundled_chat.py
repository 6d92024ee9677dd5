"""The bundled model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF through transformers, int8)
answers from an ingested document in English and in Chinese, citing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.kit.settings import Settings
from tests.conftest import Api, make_settings
from tests.documents.helpers import wait_for

pytestmark = pytest.mark.slow

HANDBOOK = (
    "Vacation policy: every employee receives 25 days of paid vacation per year. "
    "Unused vacation days expire on 31 March of the following year."
)
HANDBOOK_ZH = "年假制度：每位员工每年享有25天带薪年假，未使用的年假在次年3月31日失效。"
CAFETERIA = "The cafeteria on the ground floor serves lunch from noon until two o'clock."


@pytest.fixture
def settings(database_url: str, tmp_path: Path, bundled_gguf: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        model_cache_dir=bundled_gguf.parent,
        generator={"quantization": "int8", "max_new_tokens": 48},
    )


@pytest.fixture
async def handbook(api: Api, client: httpx.AsyncClient, app: FastAPI) -> dict[str, Any]:
    # The API answers 503 generator_preparing while the model is prepared: wait for it here.
    await app.state.generator.preload()
    await api.tenant("hr")
    editor = await api.user("ed", hr="editor")
    viewer = await api.user("vi", hr="viewer")
    ids = {}
    documents = (
        ("handbook.txt", HANDBOOK),
        ("handbook-zh.txt", HANDBOOK_ZH),
        ("cafeteria.txt", CAFETERIA),
    )
    for name, text in documents:
        response = await client.post(
            "/api/v1/tenants/hr/documents", files={"file": (name, text.encode())}, headers=editor
        )
        assert response.status_code == 202, response.text
        ids[name] = response.json()["id"]
        assert (await wait_for(client, editor, "hr", ids[name]))["status"] == "ready"
    return {"viewer": viewer, "handbooks": {ids["handbook.txt"], ids["handbook-zh.txt"]}}


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How many days of paid vacation does every employee receive per year?", "25"),
        ("每位员工每年享有多少天带薪年假？", "25"),
    ],
    ids=["english", "chinese"],
)
async def test_answers_with_a_citation(
    client: httpx.AsyncClient, handbook: dict[str, Any], question: str, expected: str
) -> None:
    response = await client.post(
        "/api/v1/tenants/hr/chat", json={"question": question}, headers=handbook["viewer"]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["grounded"] is True, body
    assert expected in body["answer"], body["answer"]
    cited = {c["document_id"] for c in body["citations"]}
    assert cited & handbook["handbooks"], body
    if not question.isascii():
        # Answered in Chinese: mostly Han characters, not English.
        han = sum("\u4e00" <= ch <= "\u9fff" for ch in body["answer"])
        assert han >= 4, body["answer"]
