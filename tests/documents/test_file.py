"""Issue 23, the document page's API: edit title, tags and sensitivity; download the original
(audited, same visibility as the document, decrypted when sealed at rest); replace the file
(the old version erased everywhere with a deletion receipt, the document re-ingested); retry
only where another attempt can help."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.documents.status import document_status
from app.kit.headers import attachment
from app.kit.settings import Settings
from app.models import AuditEntry, Document
from tests.conftest import Api, assert_error
from tests.crypto.helpers import encrypted_settings, scan
from tests.documents.helpers import wait_for
from tests.documents.test_purge import _receipt
from tests.helpers import key_of

BASE = "/api/v1/tenants/{t}/documents"
OLD = "zqoldversion4417"
NEW = "zqnewversion8821"
OLD_TEXT = f"Ferry timetable: the {OLD} ferry leaves the north pier at seven.\n".encode()
NAME = "渡轮 时刻表.md"
NEW_TEXT = f"Ferry timetable: the {NEW} ferry leaves the south pier at nine.\n".encode()


@pytest.fixture
async def hr(api: Api) -> dict[str, Any]:
    """Tenant hr with one person per role, and an admin of another tenant."""
    await api.tenant("hr")
    await api.tenant("eng")
    people = {"admin": "ad", "editor": "ed", "viewer": "vi", "restricted_viewer": "re"}
    roles = {role: await api.user(name, hr=role) for role, name in people.items()}
    roles["guest"] = await api.user("gu", hr="guest")
    roles["auditor"] = await api.user("au", hr="auditor")
    roles["outsider"] = await api.user("out", eng="admin")
    roles["restricted"] = roles["restricted_viewer"]
    return roles


async def _ready(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str,
    content: bytes,
    *,
    status: str = "ready",
    **fields: str,
) -> str:
    response = await client.post(
        BASE.format(t="hr"), files={"file": (name, content)}, data=fields, headers=headers
    )
    assert response.status_code == 202, response.text
    doc_id = str(response.json()["id"])
    body = await wait_for(client, headers, "hr", doc_id)  # type: ignore[arg-type]
    assert body["status"] == status, body
    return doc_id


async def _search(client: httpx.AsyncClient, headers: dict[str, str], query: str) -> list[str]:
    response = await client.post(
        "/api/v1/tenants/hr/search", json={"query": query, "mode": "bm25"}, headers=headers
    )
    assert response.status_code == 200, response.text
    return [hit["text"] for hit in response.json()["hits"]]


async def _actions(app: FastAPI) -> list[str]:
    async with app.state.database.read_sessionmaker() as session:
        return list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


async def test_edit_title_tags_and_sensitivity(
    hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    doc = await _ready(client, hr["editor"], "ferry.txt", OLD_TEXT, sensitivity="internal")
    url = f"{BASE.format(t='hr')}/{doc}"
    assert await _search(client, hr["restricted"], OLD)

    changed = await client.patch(
        url,
        json={
            "title": "Ferry times",
            "tags": ["ferries", " ferries", "2026"],
            "sensitivity": "confidential",
        },
        headers=hr["editor"],
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["title"], body["tags"], body["sensitivity"]) == (
        "Ferry times",
        ["2026", "ferries"],
        "confidential",
    )
    # On the very next search: a restricted viewer no longer sees it, a viewer does.
    assert await _search(client, hr["restricted"], OLD) == []
    assert await _search(client, hr["viewer"], OLD)
    assert "document.update" in await _actions(app)

    # Bounded: too many tags, a bad tag, an overlong title, an unknown level are 422.
    for bad in (
        {"tags": [f"t{i}" for i in range(33)]},
        {"tags": ["x"] * 1000},
        {"tags": ["no,commas"]},
        {"tags": ["a" * 300]},
        {"title": "x" * 501},
        {"sensitivity": "secret"},
    ):
        assert_error(await client.patch(url, json=bad, headers=hr["editor"]), 422)
    # Anonymous 401, viewer 403, another tenant 404.
    assert_error(await client.patch(url, json={"title": "x"}), 401)
    assert_error(await client.patch(url, json={"title": "x"}, headers=hr["viewer"]), 403)
    other = f"{BASE.format(t='eng')}/{doc}"
    assert_error(await client.patch(other, json={"title": "x"}, headers=hr["outsider"]), 404)


def test_attachment_names_are_safe_in_the_header() -> None:
    assert attachment('a "b"\\c%.pdf') == (
        "attachment; filename=\"a _b__c_.pdf\"; filename*=UTF-8''a%20%22b%22%5Cc%25.pdf"
    )
    assert attachment("x\r\nSet-Cookie: y\u202e.txt") == (
        "attachment; filename=\"xSet-Cookie: y.txt\"; filename*=UTF-8''xSet-Cookie%3A%20y.txt"
    )
    assert attachment("\n") == "attachment; filename=\"download\"; filename*=UTF-8''download"


async def test_download_follows_the_document_s_visibility(
    hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    doc = await _ready(client, hr["editor"], NAME, OLD_TEXT, sensitivity="confidential")
    url = f"{BASE.format(t='hr')}/{doc}/file"
    for who in ("editor", "viewer"):
        response = await client.get(url, headers=hr[who])
        assert response.status_code == 200, response.text
        assert response.content == OLD_TEXT
    assert response.headers["content-type"].startswith("text/markdown")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    disposition = response.headers["content-disposition"]
    assert disposition == f"attachment; filename=\"__ ___.md\"; filename*=UTF-8''{quote(NAME)}"
    assert (await _actions(app)).count("document.download") == 2

    # A restricted viewer does not see a confidential document at all: 404, as for reading it.
    assert_error(await client.get(url, headers=hr["restricted"]), 404)
    assert_error(await client.get(f"{BASE.format(t='hr')}/{doc}", headers=hr["restricted"]), 404)
    # Roles without document access: 403; anonymous 401; another tenant 404.
    assert_error(await client.get(url, headers=hr["guest"]), 403)
    assert_error(await client.get(url, headers=hr["auditor"]), 403)
    assert_error(await client.get(url), 401)
    other = f"{BASE.format(t='eng')}/{doc}/file"
    assert_error(await client.get(other, headers=hr["outsider"]), 404)
    assert (await _actions(app)).count("document.download") == 2

    # Soft-deleted: gone for downloads too (even for the editor, who can still restore it).
    deleted = await client.delete(f"{BASE.format(t='hr')}/{doc}", headers=hr["editor"])
    assert deleted.status_code == 202
    assert_error(await client.get(url, headers=hr["editor"]), 404)


class TestSealedAtRest:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return encrypted_settings(database_url, tmp_path)

    @pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
    async def test_a_sealed_file_downloads_as_the_original_bytes(
        self, hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        doc = await _ready(client, hr["editor"], "ferry.txt", OLD_TEXT)
        # Sealed on disk: the canary is in no stored file.
        assert scan(app.state.settings.files_dir, OLD.encode()) == []
        response = await client.get(f"{BASE.format(t='hr')}/{doc}/file", headers=hr["viewer"])
        assert response.status_code == 200, response.text
        assert response.content == OLD_TEXT


async def test_replace_erases_the_old_version_with_a_receipt(
    hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    doc = await _ready(
        client,
        hr["editor"],
        "ferry.txt",
        OLD_TEXT,
        title="Ferries",
        tags="boats",
        sensitivity="public",
    )
    url = f"{BASE.format(t='hr')}/{doc}"
    assert await _search(client, hr["viewer"], OLD)
    async with app.state.database.read_sessionmaker() as session:
        document = await session.get(Document, key_of(doc))
        assert document is not None
        old_sha, tenant_id = document.content_sha256, document.tenant_id

    replaced = await client.put(
        f"{url}/file", files={"file": ("ferry-2026.txt", NEW_TEXT)}, headers=hr["editor"]
    )
    assert replaced.status_code == 202, replaced.text
    accepted = replaced.json()
    assert (accepted["id"], accepted["status"]) == (doc, "queued")
    body = await wait_for(client, hr["editor"], "hr", doc)  # type: ignore[arg-type]
    assert body["status"] == "ready", body
    # Same document: id, title, tags and sensitivity kept; the new file's name, size and hash.
    assert (body["title"], body["tags"], body["sensitivity"]) == ("Ferries", ["boats"], "public")
    assert body["filename"] == "ferry-2026.txt"
    assert body["size_bytes"] == len(NEW_TEXT)
    assert body["sha256"] != old_sha

    # The old text is found nowhere any more, the new one is.
    assert await _search(client, hr["viewer"], OLD) == []
    assert await _search(client, hr["viewer"], NEW)
    assert scan(app.state.settings.files_dir, OLD.encode()) == []
    assert scan(app.state.settings.index_dir, OLD.encode()) == []
    assert not app.state.content_store.exists(tenant_id, old_sha)
    download = await client.get(f"{url}/file", headers=hr["viewer"])
    assert download.content == NEW_TEXT

    # The receipt: the old version's content hash, what was removed, verified.
    receipt = await _receipt(client, hr["admin"], "hr", accepted["receipt_id"])
    assert receipt["subject_type"] == "document_version"
    assert receipt["document_id"] == doc
    assert receipt["content_sha256"] == old_sha
    assert receipt["verification"]["passed"] is True
    assert receipt["removed"]["chunks"] >= 1
    assert receipt["removed"]["files"] >= 1
    assert receipt["receipt_hash"]
    actions = await _actions(app)
    assert "document.replace" in actions
    assert "document.version_purge" in actions


async def test_replace_refusals(
    hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = await _ready(client, hr["editor"], "ferry.txt", OLD_TEXT)
    other = await _ready(client, hr["editor"], "other.txt", NEW_TEXT)
    url = f"{BASE.format(t='hr')}/{doc}/file"

    def put(content: bytes, headers: dict[str, str] | None = None) -> Any:
        return client.put(url, files={"file": ("new.txt", content)}, headers=headers)

    assert_error(await put(b"fresh text"), 401)
    assert_error(await put(b"fresh text", hr["viewer"]), 403)
    assert_error(
        await client.put(
            f"{BASE.format(t='eng')}/{doc}/file",
            files={"file": ("new.txt", b"fresh text")},
            headers=hr["outsider"],
        ),
        404,
    )
    assert_error(await put(OLD_TEXT, hr["editor"]), 409, "same_content")
    assert_error(await put(NEW_TEXT, hr["editor"]), 409, "duplicate_document")
    assert_error(await put(b"", hr["editor"]), 400, "empty_file")
    assert_error(await put(b"\x00\x01\x02\xff" * 64, hr["editor"]), 415)
    monkeypatch.setattr(app.state.settings, "max_upload_bytes", 16)
    assert_error(await put(b"a long enough text to pass the limit", hr["editor"]), 413)
    monkeypatch.undo()
    assert_error(await client.put(url, data={"x": "1"}, headers=hr["editor"]), 422)  # no file part

    # While it is being processed: 409 with a clear code.
    async with app.state.database.sessionmaker() as session, session.begin():
        document = await session.get(Document, key_of(doc))
        assert document is not None
        document_status.mark_processing(document)
    assert_error(await put(b"fresh text", hr["editor"]), 409, "document_processing")
    # Deleted: restore first.
    deleted = await client.delete(f"{BASE.format(t='hr')}/{other}", headers=hr["editor"])
    assert deleted.status_code == 202
    assert_error(
        await client.put(
            f"{BASE.format(t='hr')}/{other}/file",
            files={"file": ("new.txt", b"fresh text")},
            headers=hr["editor"],
        ),
        409,
        "document_deleted",
    )
    # Nothing was replaced or audited as replaced.
    assert "document.replace" not in await _actions(app)


async def test_retry_only_where_it_can_help(
    hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    broken = await _ready(
        client, hr["editor"], "broken.pdf", b"%PDF-1.4\nnot really a pdf\n", status="failed"
    )
    url = f"{BASE.format(t='hr')}/{broken}"
    body = (await client.get(url, headers=hr["editor"])).json()
    assert body["error_code"] == "malformed_document"
    assert body["retryable"] is False
    refused = await client.post(f"{url}/retry", headers=hr["editor"])
    assert_error(refused, 409, "not_retryable")
    assert "Replace the file" in refused.json()["error"]["message"]

    # Replacing the file is the way on: the broken version is erased, the new one ingested.
    replaced = await client.put(
        f"{url}/file", files={"file": ("fixed.txt", NEW_TEXT)}, headers=hr["editor"]
    )
    assert replaced.status_code == 202, replaced.text
    fixed = await wait_for(client, hr["editor"], "hr", broken)  # type: ignore[arg-type]
    assert fixed["status"] == "ready", fixed
    assert fixed["retryable"] is False
    receipt = await _receipt(client, hr["admin"], "hr", replaced.json()["receipt_id"])
    assert receipt["removed"]["files"] == 1

    # A failure another attempt can cure (the worker gave up: processing_error) is retryable.
    async with app.state.database.sessionmaker() as session, session.begin():
        document = await session.get(Document, key_of(broken))
        assert document is not None
        document_status.mark_failed(document, code="processing_error", message="worker died")
    body = (await client.get(url, headers=hr["editor"])).json()
    assert (body["status"], body["retryable"]) == ("failed", True)
    assert (await client.post(f"{url}/retry", headers=hr["editor"])).status_code == 202
    assert (await wait_for(client, hr["editor"], "hr", broken))["status"] == "ready"  # type: ignore[arg-type]
