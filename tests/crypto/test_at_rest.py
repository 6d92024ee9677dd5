"""Encryption at rest end to end, on SQLite and PostgreSQL: what reaches the disk, search over
sealed data, moved ciphertexts, crypto-shredding, KEK rotation and converting existing data."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from app.crypto import service as crypto_service
from app.crypto.chunks import open_chunk_text
from app.crypto.keyring import Keyring
from app.jobs.runtime import Runtime
from app.kit.envelope import EncryptionError, blob_ad, is_sealed
from app.kit.kek import KekError, load_kek
from app.kit.public_ids import IdKind, encode_id
from app.kit.settings import Settings
from app.kit.storage import ContentStore
from app.models import AuditEntry, Chunk, Document, TenantKey
from tests.conftest import Api, assert_error
from tests.crypto.helpers import CANARY, encrypted_settings, scan, write_kek
from tests.documents.helpers import wait_for
from tests.helpers import key_of
from tests.web.helpers import sign_in

SEARCH = "/api/v1/tenants/{t}/search"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return encrypted_settings(database_url, tmp_path)


def _body(n: int) -> bytes:
    return (
        f"# Travel policy {n}\n\nThe {CANARY} allowance covers trains and hotels for trip {n}. "
        "Receipts go to the finance office within thirty days.\n"
    ).encode()


async def _upload(client: httpx.AsyncClient, headers: dict[str, str], slug: str, n: int = 0) -> int:
    response = await client.post(
        f"/api/v1/tenants/{slug}/documents",
        files={"file": (f"travel-{n}.md", _body(n), "text/markdown")},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    document_id = key_of(response.json()["id"])
    body = await wait_for(client, headers, slug, response.json()["id"])
    assert body["status"] == "ready", body
    return document_id


async def _search(client: httpx.AsyncClient, headers: dict[str, str], slug: str) -> list[str]:
    response = await client.post(
        SEARCH.format(t=slug), json={"query": CANARY, "mode": "bm25"}, headers=headers
    )
    assert response.status_code == 200, response.text
    return [hit["text"] for hit in response.json()["hits"]]


async def _tenant_id(app: FastAPI, slug: str) -> int:
    async with app.state.database.read_sessionmaker() as session:
        found = await session.scalar(text("SELECT id FROM tenants WHERE slug = :s"), {"s": slug})
    assert found is not None
    return int(found)


async def _sealed_rows(app: FastAPI) -> tuple[int, int]:
    """(chunk rows holding the canary in plaintext, chunk rows in all)."""
    async with app.state.database.read_sessionmaker() as session:
        plain = await session.scalar(
            select(text("count(*)")).select_from(Chunk).where(Chunk.text.contains(CANARY))
        )
        total = await session.scalar(select(text("count(*)")).select_from(Chunk))
    return int(plain or 0), int(total or 0)


async def _vectors_sealed(app: FastAPI) -> bool:
    """Whether every chunk's stored vector is sealed (they leak text to inversion attacks)."""
    async with app.state.database.read_sessionmaker() as session:
        vectors = list(await session.scalars(select(Chunk.embedding)))
    return bool(vectors) and all(is_sealed(v) for v in vectors)


async def test_a_canary_is_nowhere_on_disk_yet_search_finds_it(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings, backend: str
) -> None:
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    await _upload(client, headers, "hr")
    texts = await _search(client, headers, "hr")
    assert texts
    assert CANARY in texts[0]
    plain, total = await _sealed_rows(app)
    assert total > 0
    assert plain == 0
    assert await _vectors_sealed(app)
    await app.state.database.checkpoint_wal()
    # Every byte under the data dir: originals, shard files and, on SQLite, cairn.db and -wal.
    files = list(settings.data_dir.rglob("*"))
    assert any(p.name.endswith(".faiss") for p in files)
    assert any(p.name.endswith(".bm25.npz") for p in files)
    assert scan(settings.data_dir, CANARY.encode()) == []
    if backend == "sqlite":
        database = Path(make_url(settings.resolved_database_url).database or "")
        stored = [p for p in database.parent.glob(database.name + "*") if p.is_file()]
        assert database in stored
        for path in stored:  # the database file, and its -wal and -shm when there
            assert CANARY.lower().encode() not in path.read_bytes().lower(), path
    # BM25 postings hold stemmed, lowercased tokens: not those either.
    assert scan(settings.index_dir, b"zephyrquokka") == []


async def test_ciphertext_moved_to_another_tenant_or_row_fails_clearly(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    await api.tenant("hr")
    await api.tenant("eng")
    hr = await api.user("hred", hr="editor")
    eng = await api.user("enged", eng="editor")
    hr_doc = await _upload(client, hr, "hr", 1)
    eng_doc = await _upload(client, eng, "eng", 2)
    hr_id, eng_id = await _tenant_id(app, "hr"), await _tenant_id(app, "eng")
    keyring: Keyring = app.state.runtime.keyring
    store: ContentStore = app.state.content_store
    async with app.state.database.read_sessionmaker() as session:
        hr_sha = (await session.get(Document, hr_doc)).content_sha256  # type: ignore[union-attr]
        eng_sha = (await session.get(Document, eng_doc)).content_sha256  # type: ignore[union-attr]
        hr_chunk = (
            await session.execute(
                select(Chunk.text, Chunk.position).where(Chunk.document_id == hr_doc)
            )
        ).first()
    assert hr_chunk is not None
    hr_key, eng_key = await keyring.for_reading(hr_id), await keyring.for_reading(eng_id)
    # The file: hr's blob copied over eng's.
    shutil.copyfile(store.path_for(hr_id, hr_sha), store.path_for(eng_id, eng_sha))
    with pytest.raises(EncryptionError, match=f"cannot be decrypted with tenant {eng_id}'s key"):
        store.read(eng_id, eng_sha, eng_key)
    # Even under hr's key it is not eng's object.
    with pytest.raises(EncryptionError, match="another tenant or object"):
        hr_key.open(store.path_for(eng_id, eng_sha).read_bytes(), blob_ad(eng_id, eng_sha))  # type: ignore[union-attr]
    # The chunk text: hr's value read as eng's row, and as another row of hr.
    stored, position = hr_chunk
    assert stored.startswith("cairn:enc:v1:")
    assert open_chunk_text(hr_key, hr_id, hr_doc, position, stored).count(CANARY) == 1
    with pytest.raises(EncryptionError, match="cannot be decrypted"):
        open_chunk_text(eng_key, eng_id, eng_doc, position, stored)
    with pytest.raises(EncryptionError, match="cannot be decrypted"):
        open_chunk_text(hr_key, hr_id, hr_doc, position + 1, stored)
    # Without a key at all: a clear message, not garbage.
    with pytest.raises(EncryptionError, match="is encrypted, but no key is available"):
        open_chunk_text(None, hr_id, hr_doc, position, stored)


async def test_shred_leaves_an_earlier_copy_undecryptable(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    await api.tenant("hr")
    await api.tenant("eng")
    headers = await api.user("hrad", hr="admin")
    document_id = await _upload(client, headers, "hr")
    tenant_id = await _tenant_id(app, "hr")
    async with app.state.database.read_sessionmaker() as session:
        document = await session.get(Document, document_id)
        assert document is not None
        sha = document.content_sha256
        wrapped = await session.get(TenantKey, tenant_id)
        assert wrapped is not None
        old_wrapped, old_fingerprint = wrapped.wrapped_key, wrapped.kek_fingerprint
    # A copy of the data dir, as a backup or disk snapshot before the deletion would hold.
    copy = tmp_path / "copy"
    shutil.copytree(settings.data_dir, copy, ignore=shutil.ignore_patterns("cairn.db*"))
    # Only a platform admin may delete; a tenant admin gets 403.
    assert_error(
        await client.delete("/api/v1/tenants/hr?shred=true", headers=headers), 403, "forbidden"
    )
    response = await client.delete("/api/v1/tenants/hr?shred=true", headers=await api.admin())
    assert response.status_code == 204, response.text
    assert_error(await client.get("/api/v1/tenants/hr", headers=await api.admin()), 404)
    async with app.state.database.read_sessionmaker() as session:
        assert await session.get(TenantKey, tenant_id) is None
        actions = set(await session.scalars(select(AuditEntry.action)))
    assert {"tenant.shred", "tenant.delete"} <= actions
    assert not (settings.files_dir / f"t{tenant_id}").exists()
    assert not (settings.index_dir / f"tenant-{tenant_id}").exists()
    # A fresh process over the live database finds no key to decrypt the copy with.
    fresh = Keyring(app.state.database, settings.encryption)
    assert await fresh.for_reading(tenant_id) is None
    blob = copy / "files" / f"t{tenant_id}" / sha[:2] / sha
    assert is_sealed(blob.read_bytes())
    with pytest.raises(EncryptionError, match="no key is available"):
        ContentStore(copy / "files").read(tenant_id, sha, None)
    shards = list((copy / "indexes" / f"tenant-{tenant_id}").glob("*-v*.*"))
    assert shards
    assert all(is_sealed(p.read_bytes()) for p in shards)
    # A database backup from before still holds the wrapped key: it is shredded too once the
    # KEK has been rotated and the old one destroyed.
    new_kek = load_kek(write_kek(tmp_path / "new-kek"))
    await crypto_service.rotate_kek(app.state.runtime, new_kek)
    with pytest.raises(KekError, match="wrapped under another KEK"):
        new_kek.unwrap(tenant_id, old_wrapped, old_fingerprint)
    with pytest.raises(KekError, match="does not unwrap"):
        new_kek.unwrap(tenant_id, old_wrapped, new_kek.fingerprint)
    # The other tenant is untouched.
    assert (await client.get("/api/v1/tenants/eng", headers=await api.admin())).status_code == 200


async def test_kek_rotation_keeps_search_and_retires_the_old_kek(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    await _upload(client, headers, "hr")
    runtime: Runtime = app.state.runtime
    new_file = write_kek(tmp_path / "kek-2")
    assert await crypto_service.rotate_kek(runtime, load_kek(new_file)) == 1
    tenant_id = await _tenant_id(app, "hr")
    # A process started with the new KEK reads everything.
    rotated = settings.encryption.model_copy(update={"kek_file": new_file})
    assert await Keyring(runtime.database, rotated).for_reading(tenant_id) is not None
    # This process, its cached keys dropped, unwraps with the new KEK and still searches.
    runtime.keyring.forget()
    app.state.retriever.cache.forget(tenant_id)
    texts = await _search(client, headers, "hr")
    assert texts
    assert CANARY in texts[0]
    # The old KEK unwraps nothing any more.
    with pytest.raises(KekError, match="wrapped under another KEK"):
        await Keyring(runtime.database, settings.encryption).for_reading(tenant_id)
    old = load_kek(settings.encryption.kek_file)  # type: ignore[arg-type]
    async with runtime.database.read_sessionmaker() as session:
        row = await session.get(TenantKey, tenant_id)
        assert row is not None
        with pytest.raises(KekError, match="does not unwrap"):
            old.unwrap(tenant_id, row.wrapped_key, old.fingerprint)


async def test_a_purge_of_a_sealed_document_is_verified(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    await api.tenant("hr")
    headers = await api.user("hrad", hr="admin")
    keep = await _upload(client, headers, "hr", 1)
    doomed = await _upload(client, headers, "hr", 2)
    response = await client.delete(
        f"/api/v1/tenants/hr/documents/{encode_id(IdKind.DOCUMENT, doomed)}?purge=true",
        headers=headers,
    )
    assert response.status_code == 202, response.text
    url = f"/api/v1/tenants/hr/deletion-receipts/{response.json()['receipt_id']}"
    deadline = time.monotonic() + 60
    while (receipt := (await client.get(url, headers=headers)).json())["status"] == "pending":
        assert time.monotonic() < deadline, receipt
        await asyncio.sleep(0.2)
    # The verification asked the sealed shards for the purged document's own words.
    assert receipt["status"] == "done", receipt
    assert receipt["verification"]["passed"] is True, receipt
    checks = {c["name"]: c for c in receipt["verification"]["checks"]}
    assert checks["bm25_own_terms"]["passed"], checks
    assert checks["shard_files"]["passed"], checks
    # The rewritten shard versions are sealed too, and the other document is still found.
    tenant_id = await _tenant_id(app, "hr")
    shards = list((settings.index_dir / f"tenant-{tenant_id}").glob("*-v*.*"))
    assert shards
    assert all(is_sealed(p.read_bytes()) for p in shards)
    texts = await _search(client, headers, "hr")
    assert [t for t in texts if "trip 1" in t]
    assert not [t for t in texts if "trip 2" in t]
    assert keep != doomed


async def test_a_rebuild_with_new_vectors_keeps_everything_sealed(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    await _upload(client, headers, "hr")
    runtime: Runtime = app.state.runtime
    tenant_id = await _tenant_id(app, "hr")
    count = await runtime.indexer.rebuild_tenant(
        tenant_id, embedder=await runtime.embedder(), reembed=True
    )
    assert count > 0
    assert await _vectors_sealed(app)
    shards = list((settings.index_dir / f"tenant-{tenant_id}").glob("*-v*.*"))
    assert shards
    assert all(is_sealed(p.read_bytes()) for p in shards)
    for mode in ("bm25", "vector"):
        response = await client.post(
            SEARCH.format(t="hr"), json={"query": CANARY, "mode": mode}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert any(CANARY in hit["text"] for hit in response.json()["hits"]), mode


async def test_a_knowledge_base_stemmer_change_re_tokenizes_sealed_chunks(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    """The keyword-index rebuild opens the sealed chunk text with the tenant's key and seals
    the BM25 versions it writes."""
    await api.tenant("hr")
    headers = await api.user("hrad", hr="admin")
    await _upload(client, headers, "hr")
    tenant_id = await _tenant_id(app, "hr")
    folder = settings.index_dir / f"tenant-{tenant_id}"
    before = {p.name for p in folder.glob("bm25-*")}

    async def found(query: str) -> bool:
        response = await client.post(
            SEARCH.format(t="hr"), json={"query": query, "mode": "bm25"}, headers=headers
        )
        assert response.status_code == 200, response.text
        return any("hotels" in hit["text"] for hit in response.json()["hits"])

    assert await found("hotel")  # stemmed: "hotels" → "hotel"
    changed = await client.patch(
        "/api/v1/tenants/hr/settings", json={"bm25": {"stemmer": "none"}}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    job_url = f"/api/v1/tenants/hr/jobs/{changed.json()['rebuild_job_id']}"
    deadline = time.monotonic() + 60
    while (job := (await client.get(job_url, headers=headers)).json())["status"] != "done":
        assert job["status"] != "failed", job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)
    assert not await found("hotel")
    assert await found("hotels")
    rewritten = [p for p in folder.glob("bm25-*") if p.name not in before]
    assert rewritten
    assert all(is_sealed(p.read_bytes()) for p in folder.glob("*-v*.*"))


async def test_sealed_chunks_are_read_and_curated_as_text(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    """The chunks API, an edit and the document page open sealed chunks with the tenant's key;
    the rows stay sealed."""
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    public = encode_id(IdKind.DOCUMENT, await _upload(client, headers, "hr"))
    chunks_url = f"/api/v1/tenants/hr/documents/{public}/chunks"
    listed = (await client.get(chunks_url, headers=headers)).json()["items"]
    assert any(CANARY in c["text"] for c in listed)
    assert listed[0]["headings"] == ["Travel policy 0"]
    edited = await client.patch(
        f"{chunks_url}/{listed[0]['id']}",
        json={"text": f"The {CANARY} allowance now covers ferries."},
        headers=headers,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["text"].endswith("covers ferries.")
    assert edited.json()["headings"] == ["Travel policy 0"]
    assert any("ferries" in t for t in await _search(client, headers, "hr"))
    plain, total = await _sealed_rows(app)
    assert total > 0
    assert plain == 0
    await sign_in(client, "ed", "ed-password")
    page = await client.get(f"/t/hr/documents/{public}")
    assert page.status_code == 200
    assert "covers ferries." in page.text
    assert "cairn:enc" not in page.text
