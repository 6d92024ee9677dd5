"""Upload → parse → chunk → embed → index, through the HTTP API and the in-process workers."""

from __future__ import annotations

import io
from typing import Any

import docx
import httpx
import pytest
from fastapi import FastAPI

from ingest.embedding import load_embedder
from tests.conftest import Api, assert_error
from tests.documents.helpers import bm25_hits, vector_hits, wait_for
from tests.helpers import key_of
from tests.ingest.pdf_fixtures import build_pdf, encrypt_pdf
from tests.ingest.zip_fixtures import docx_zip_bomb

BASE = "/api/v1/tenants/{t}/documents"


def _docx(paragraphs: list[tuple[str, str | None]]) -> bytes:
    document = docx.Document()
    for text, style in paragraphs:
        document.add_paragraph(text, style=style)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


FORMATS: dict[str, tuple[str, bytes, str]] = {
    # name: (filename, content, a phrase that must become searchable)
    "text": (
        "notes.txt",
        b"The quarterly zebrafish census counted 4211 fish.\n",
        "zebrafish census",
    ),
    "markdown": (
        "guide.md",
        b"# Onboarding\n\n## Laptops\n\nEvery hire receives a titanium laptop on day one.\n",
        "titanium laptop",
    ),
    "html": (
        "page.html",
        b"<html><head><title>Policy</title><style>.x{}</style><script>var secretScript=1"
        b"</script></head><body><h1>Travel</h1><p>Economy flights under six hours.</p>"
        b"</body></html>",
        "economy flights",
    ),
    "pdf": (
        "report.pdf",
        build_pdf([["Pipeline integrity report", "", "Corrosion found in valve 7."]]),
        "corrosion valve",
    ),
    "docx": (
        "memo.docx",
        _docx([("Memo", "Heading 1"), ("The cafeteria will serve kimchi on Fridays.", None)]),
        "kimchi fridays",
    ),
    "chinese": (
        "制度.txt",
        "# 请假制度\n\n员工每年享有十五天带薪年假。病假需要提供医院证明。\n".encode("gb18030"),
        "带薪年假",
    ),
}


@pytest.fixture
async def hr(api: Api) -> dict[str, Any]:
    tenant = await api.tenant("hr")
    await api.tenant("eng")
    return {
        "tenant": tenant,
        "editor": await api.user("ed", hr="editor"),
        "viewer": await api.user("vi", hr="viewer"),
        "restricted": await api.user("re", hr="restricted_viewer"),
        "guest": await api.user("gu", hr="guest"),
        "auditor": await api.user("au", hr="auditor"),
        "outsider": await api.user("out", eng="admin"),
    }


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    filename: str,
    content: bytes,
    slug: str = "hr",
    **fields: str,
) -> httpx.Response:
    return await client.post(
        BASE.format(t=slug), files={"file": (filename, content)}, data=fields, headers=headers
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_each_format_ingests_and_is_searchable(
    fmt: str, hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    filename, content, phrase = FORMATS[fmt]
    response = await upload(client, hr["editor"], filename, content, tags="policy,2026")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    doc = await wait_for(client, hr["editor"], "hr", response.json()["id"])
    assert doc["status"] == "ready", doc
    assert doc["chunk_count"] >= 1
    assert doc["progress"] == 1.0
    assert doc["tags"] == ["2026", "policy"]  # sorted
    hits = await bm25_hits(app, key_of(hr["tenant"]["id"]), phrase)
    assert hits, f"{phrase!r} not found by BM25"
    assert any(word.lower() in hits[0].lower() for word in phrase.split())
    embedder = load_embedder(app.state.settings.embedding)
    nearest = await vector_hits(app, key_of(hr["tenant"]["id"]), embedder.embed_query(phrase))
    assert nearest
    assert "secretScript" not in " ".join(hits + nearest)


async def test_upload_rules(hr: dict[str, Any], client: httpx.AsyncClient) -> None:
    ok = await upload(client, hr["editor"], "a.txt", b"alpha beta gamma delta")
    assert ok.status_code == 202
    # Identical content again: detected, no second document, no duplicate chunks.
    dup = await upload(client, hr["editor"], "copy.txt", b"alpha beta gamma delta")
    assert_error(dup, 409, "duplicate_document")
    assert str(ok.json()["id"]) in dup.json()["error"]["message"]
    assert_error(await upload(client, hr["editor"], "empty.txt", b""), 400, "empty_file")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    assert_error(await upload(client, hr["editor"], "evil.pdf", png), 415, "unsupported_media_type")
    elf = b"\x7fELF" + b"\x00" * 64
    assert_error(await upload(client, hr["editor"], "run.txt", elf), 415)
    bad_sensitivity = await upload(client, hr["editor"], "b.txt", b"x y z", sensitivity="secret")
    assert_error(bad_sensitivity, 422)
    assert_error(await client.post(BASE.format(t="hr"), headers=hr["editor"]), 422)


async def test_client_path_is_never_used_for_storage(
    hr: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    response = await upload(client, hr["editor"], "../../../../etc/passwd", b"harmless words here")
    assert response.status_code == 202
    doc = (
        await client.get(f"{BASE.format(t='hr')}/{response.json()['id']}", headers=hr["editor"])
    ).json()
    assert doc["filename"] == "passwd"
    stored = app.state.content_store.path_for(key_of(hr["tenant"]["id"]), doc["sha256"])
    assert stored.is_file()
    assert stored.is_relative_to(app.state.settings.files_dir)


async def test_oversized_upload_is_413(api: Api, app: FastAPI, client: httpx.AsyncClient) -> None:
    from tests.conftest import make_settings

    settings = make_settings(app.state.settings.database_url, app.state.settings.data_dir)
    small = settings.model_copy(update={"max_upload_bytes": 1000, "embedded_workers": False})
    from app.main import create_app

    other = create_app(small)
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://small") as c,
    ):
        await Api(c).tenant("hr")
        headers = await Api(c).user("big", hr="editor")
        # Over the file limit but under the request cap: the store refuses it.
        response = await upload(c, headers, "big.txt", b"word " * 220)
        assert_error(response, 413, "payload_too_large")
        # Far over: refused by the body cap before any parsing.
        response = await upload(c, headers, "huge.txt", b"word " * 40_000)
        assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("filename", "content", "code"),
    [
        (
            "locked.pdf",
            encrypt_pdf(build_pdf([["secret plans"]]), user_password="pw"),
            "encrypted_document",
        ),
        (
            "broken.pdf",
            b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\ntrailer<<>>\n%%EOF",
            "malformed_document",
        ),
        ("blank.txt", b"   \n\n\t  \n", "empty_document"),
        # 64 MB of text deflated into ~64 kB: stopped by the compression-ratio bound.
        ("bomb.docx", docx_zip_bomb(64 * 1024 * 1024), "decompression_limit"),
        ("blank.pdf", build_pdf([[""]]), "empty_document"),
    ],
    # Named by file: the encrypted PDF's bytes differ per process (pytest-xdist compares ids).
    ids=["locked.pdf", "broken.pdf", "blank.txt", "bomb.docx", "blank.pdf"],
)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_hostile_files_end_as_clear_failures(
    hr: dict[str, Any], client: httpx.AsyncClient, filename: str, content: bytes, code: str
) -> None:
    response = await upload(client, hr["editor"], filename, content)
    assert response.status_code == 202, response.text
    doc = await wait_for(client, hr["editor"], "hr", response.json()["id"])
    assert doc["status"] == "failed"
    assert doc["error_code"] == code
    assert doc["error"]
    assert doc["chunk_count"] == 0


async def test_lifecycle_list_update_delete_restore(
    hr: dict[str, Any], client: httpx.AsyncClient
) -> None:
    base = BASE.format(t="hr")
    ids = []
    for n, sensitivity in enumerate(["public", "internal", "confidential"]):
        r = await upload(
            client,
            hr["editor"],
            f"d{n}.txt",
            f"document number {n} text".encode(),
            sensitivity=sensitivity,
            tags=f"t{n},common",
        )
        ids.append(r.json()["id"])
    for doc_id in ids:
        await wait_for(client, hr["editor"], "hr", doc_id)

    def listed(response: httpx.Response) -> list[int]:
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["items"]]

    assert sorted(listed(await client.get(base, headers=hr["viewer"]))) == sorted(ids)
    # restricted_viewer sees public+internal only; the confidential one is a 404, not a 403.
    assert sorted(listed(await client.get(base, headers=hr["restricted"]))) == sorted(ids[:2])
    assert_error(await client.get(f"{base}/{ids[2]}", headers=hr["restricted"]), 404)
    page = await client.get(f"{base}?limit=2&offset=0", headers=hr["viewer"])
    assert page.json()["total"] == 3
    assert len(page.json()["items"]) == 2
    assert listed(await client.get(f"{base}?tag=t1", headers=hr["viewer"])) == [ids[1]]
    assert len(listed(await client.get(f"{base}?status=ready", headers=hr["viewer"]))) == 3

    patched = await client.patch(
        f"{base}/{ids[0]}", json={"title": "Renamed", "tags": ["x"]}, headers=hr["editor"]
    )
    assert patched.status_code == 200
    assert patched.json()["title"] == "Renamed"
    assert patched.json()["tags"] == ["x"]
    assert_error(
        await client.patch(f"{base}/{ids[0]}", json={"title": 3}, headers=hr["editor"]), 422
    )
    assert_error(
        await client.patch(f"{base}/{ids[0]}", json={"title": "x"}, headers=hr["viewer"]), 403
    )

    deleted = await client.delete(f"{base}/{ids[0]}", headers=hr["editor"])
    assert deleted.status_code == 202
    assert deleted.json()["status"] == "deleted"
    # Gone for readers at once; editors still see it as deleted and can restore it.
    assert_error(await client.get(f"{base}/{ids[0]}", headers=hr["viewer"]), 404)
    assert ids[0] not in listed(await client.get(base, headers=hr["viewer"]))
    assert listed(await client.get(f"{base}?status=deleted", headers=hr["editor"])) == [ids[0]]
    restored = await client.post(f"{base}/{ids[0]}/restore", headers=hr["editor"])
    assert restored.status_code == 200
    assert restored.json()["status"] == "ready"
    assert_error(await client.post(f"{base}/{ids[0]}/restore", headers=hr["editor"]), 409)


async def test_document_access_rules(hr: dict[str, Any], client: httpx.AsyncClient) -> None:
    base = BASE.format(t="hr")
    r = await upload(client, hr["editor"], "x.txt", b"some plain words")
    doc_id = r.json()["id"]
    # anonymous
    assert_error(await client.get(base), 401)
    assert_error(await upload(client, {}, "y.txt", b"words"), 401)
    # wrong role
    assert_error(await upload(client, hr["viewer"], "y.txt", b"other words"), 403)
    assert_error(await client.delete(f"{base}/{doc_id}", headers=hr["viewer"]), 403)
    assert_error(await client.get(base, headers=hr["guest"]), 403)
    # auditor: audit log yes, documents no
    assert_error(await client.get(base, headers=hr["auditor"]), 403)
    assert_error(await client.get(f"{base}/{doc_id}", headers=hr["auditor"]), 403)
    assert (await client.get("/api/v1/tenants/hr/audit", headers=hr["auditor"])).status_code == 200
    # other tenant: indistinguishable from a missing one
    for response in (
        await client.get(base, headers=hr["outsider"]),
        await client.get(f"{base}/{doc_id}", headers=hr["outsider"]),
        await upload(client, hr["outsider"], "z.txt", b"more words"),
    ):
        assert_error(response, 404)
    # a document id of another tenant through one's own tenant: 404
    other = await upload(client, hr["outsider"], "e.txt", b"eng words", slug="eng")
    assert_error(await client.get(f"{base}/{other.json()['id']}", headers=hr["editor"]), 404)
