"""Upload input edge cases: empty files, an explicitly empty sensitivity, bidi controls."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.kit.settings import Settings
from tests.conftest import Api, assert_error
from tests.documents.test_endpoints import BASE, upload

RLO = "\u202e"


@pytest.fixture
async def editor(api: Api) -> dict[str, str]:
    await api.tenant("hr")
    return await api.user("ed", hr="editor")


async def test_a_refused_empty_upload_leaves_no_blob(
    editor: dict[str, str], client: httpx.AsyncClient, settings: Settings
) -> None:
    assert_error(await upload(client, editor, "empty.txt", b""), 400, "empty_file")
    assert [p for p in settings.files_dir.rglob("*") if p.is_file()] == []


async def test_an_explicitly_empty_sensitivity_is_refused(
    editor: dict[str, str], client: httpx.AsyncClient
) -> None:
    refused = await upload(client, editor, "a.txt", b"alpha beta gamma", sensitivity="")
    assert_error(refused, 422, "validation_error")
    assert "sensitivity" in refused.json()["error"]["message"]
    assert_error(await upload(client, editor, "a.txt", b"alpha beta", sensitivity="none"), 422)
    # Absent: the default.
    accepted = await upload(client, editor, "a.txt", b"alpha beta gamma")
    assert accepted.status_code == 202, accepted.text
    read = await client.get(f"{BASE.format(t='hr')}/{accepted.json()['id']}", headers=editor)
    assert read.json()["sensitivity"] == "internal"


async def _read(client: httpx.AsyncClient, headers: dict[str, str], doc_id: Any) -> Any:
    return (await client.get(f"{BASE.format(t='hr')}/{doc_id}", headers=headers)).json()


async def test_bidi_and_control_characters_leave_names_and_titles(
    editor: dict[str, str], client: httpx.AsyncClient, app: FastAPI
) -> None:
    # Displays as "invoicetxt.exe" with the override in place.
    first = await upload(
        client, editor, f"invoice{RLO}exe.txt", b"first words", title=f"{RLO}Q3\u2066 report\x07"
    )
    assert first.status_code == 202, first.text
    doc = await _read(client, editor, first.json()["id"])
    assert doc["filename"] == "invoiceexe.txt"
    assert doc["title"] == "Q3 report"

    # A title with nothing visible left falls back to the (cleaned) file name.
    second = await upload(client, editor, f"\u200f{RLO}b.txt", b"second words", title=RLO)
    assert second.status_code == 202, second.text
    doc = await _read(client, editor, second.json()["id"])
    assert (doc["filename"], doc["title"]) == ("b.txt", "b.txt")

    url = f"{BASE.format(t='hr')}/{second.json()['id']}"
    patched = await client.patch(url, json={"title": f"line\none{RLO}\u061c"}, headers=editor)
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "line one"
    for empty in (RLO, "\u2066\u2069 \u200e", "\x00"):
        assert_error(await client.patch(url, json={"title": empty}, headers=editor), 422)
