"""Tenant-key rotation on SQLite and PostgreSQL: new data under the new key at once, old data
readable until it is re-encrypted, the old key destroyed at the end, an interrupted rotation
resumed, and other processes picking up the new key within `key_refresh_seconds`."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.crypto import rotation
from app.crypto import service as crypto_service
from app.crypto.keyring import Keyring, unwrap_row
from app.jobs.runtime import Runtime
from app.kit.envelope import (
    DataKey,
    EncryptionError,
    blob_ad,
    is_sealed_text,
    sealed_generation,
    shard_ad,
)
from app.kit.kek import load_kek
from app.kit.settings import Settings
from app.kit.storage import ContentStore
from app.models import AuditEntry, Chunk, Document, TenantKey
from app.search.index.erasure import shard_files
from tests.conftest import Api, assert_error
from tests.crypto.helpers import (
    CANARY,
    Interrupted,
    encrypted_settings,
    interrupt_sealing_at,
    write_kek,
)
from tests.crypto.test_at_rest import _search, _tenant_id, _upload


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return encrypted_settings(database_url, tmp_path)


async def _no_wait(seconds: float) -> None:
    return None


async def _generations(app: FastAPI, settings: Settings, tenant_id: int) -> set[int | None]:
    """The key generation of every sealed object of the tenant: chunk rows, files, shards."""
    found: set[int | None] = set()
    async with app.state.database.read_sessionmaker() as session:
        rows = (await session.execute(select(Chunk.text, Chunk.embedding))).all()
        shas = set(await session.scalars(select(Document.content_sha256)))
    for text, vector in rows:
        assert is_sealed_text(text)
        found.add(1 if text.startswith("cairn:enc:v1:") else int(text.split(":")[3][1:]))
        found.add(sealed_generation(vector))
    for sha in shas:
        found.add(sealed_generation(app.state.content_store.path_for(tenant_id, sha).read_bytes()))
    for shard in shard_files(settings.index_dir, tenant_id):
        found.add(sealed_generation(shard.path.read_bytes()))
    return found


async def _key_row(app: FastAPI, tenant_id: int) -> TenantKey:
    async with app.state.database.read_sessionmaker() as session:
        row = await session.get(TenantKey, tenant_id)
    assert row is not None
    return row


async def test_rotation_re_encrypts_while_serving_and_destroys_the_old_key(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    first = await _upload(client, headers, "hr", 1)
    tenant_id = await _tenant_id(app, "hr")
    runtime: Runtime = app.state.runtime
    kek = runtime.keyring.kek()
    old_key = unwrap_row(kek, await _key_row(app, tenant_id))
    assert old_key.generation == 1
    # A copy of the data dir taken before the rotation (a disk snapshot, an old backup).
    copy = tmp_path / "copy"
    shutil.copytree(settings.data_dir, copy, ignore=shutil.ignore_patterns("cairn.db*"))

    generation, resumed = await rotation.start(runtime, tenant_id)
    assert (generation, resumed) == (2, False)
    # New data is sealed under the new key at once; old and new are served side by side.
    second = await _upload(client, headers, "hr", 2)
    assert await _generations(app, settings, tenant_id) == {1, 2}
    texts = await _search(client, headers, "hr")
    assert len([t for t in texts if CANARY in t]) == 2
    status = (await crypto_service.status(runtime))[0]
    assert status.rotating
    assert not status.complete

    done = await rotation.rotate_tenant_key(runtime, tenant_id, sleep=_no_wait)
    assert done.resumed
    assert done.generation == 2
    assert done.converted.chunks > 0
    assert done.converted.files == 1
    assert done.converted.shards > 0
    assert await _generations(app, settings, tenant_id) == {2}
    row = await _key_row(app, tenant_id)
    assert (row.generation, row.retired_key, row.retired_generation) == (2, None, None)
    status = (await crypto_service.status(runtime))[0]
    assert status.complete
    assert status.generation == 2

    # Searches go on from shards loaded from the re-encrypted files.
    app.state.retriever.cache.forget(tenant_id)
    texts = await _search(client, headers, "hr")
    assert len([t for t in texts if CANARY in t]) == 2
    # The old key opens nothing that is stored now...
    async with app.state.database.read_sessionmaker() as session:
        document = await session.get(Document, first)
        assert document is not None
        sha = document.content_sha256
    store: ContentStore = app.state.content_store
    with pytest.raises(EncryptionError, match="key generation 2"):
        store.read(tenant_id, sha, old_key)
    # ...and what the database holds now opens nothing of the copy from before.
    new_key = unwrap_row(kek, row)
    old_blob = copy / "files" / f"t{tenant_id}" / sha[:2] / sha
    with pytest.raises(EncryptionError, match="key generation 1"):
        new_key.open(old_blob.read_bytes(), blob_ad(tenant_id, sha))
    for shard in shard_files(copy / "indexes", tenant_id):
        with pytest.raises(EncryptionError, match="key generation 1"):
            new_key.open(
                shard.path.read_bytes(),
                shard_ad(tenant_id, shard.kind, shard.shard_no, shard.version),
            )
    assert second != first


async def test_an_interrupted_rotation_resumes_and_kek_rotation_carries_the_retired_key(
    api: Api,
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    for n in range(3):
        await _upload(client, headers, "hr", n)
    tenant_id = await _tenant_id(app, "hr")
    runtime: Runtime = app.state.runtime

    undo = interrupt_sealing_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        await rotation.rotate_tenant_key(runtime, tenant_id, sleep=_no_wait)
    undo()
    assert await _generations(app, settings, tenant_id) == {1, 2}
    texts = await _search(client, headers, "hr")
    assert len([t for t in texts if CANARY in t]) == 3

    # The KEK is rotated meanwhile: the retired key moves to the new KEK with the current one.
    new_file = write_kek(tmp_path / "kek-2")
    await crypto_service.rotate_kek(runtime, load_kek(new_file))
    row = await _key_row(app, tenant_id)
    assert row.retired_generation == 1
    retired = unwrap_row(load_kek(new_file), row)
    assert [g for g, _ in retired.retired] == [1]

    runtime.keyring.forget()
    done = await rotation.rotate_tenant_key(runtime, tenant_id, sleep=_no_wait)
    assert done.resumed
    assert done.generation == 2
    assert await _generations(app, settings, tenant_id) == {2}
    app.state.retriever.cache.forget(tenant_id)
    texts = await _search(client, headers, "hr")
    assert len([t for t in texts if CANARY in t]) == 3
    # A second rotation starts generation 3 from there.
    assert (await rotation.start(runtime, tenant_id)) == (3, False)


async def test_other_processes_take_the_new_key_within_the_refresh_interval(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    await _upload(client, headers, "hr")
    tenant_id = await _tenant_id(app, "hr")
    now = [1000.0]
    # Another process: its own keyring, with the key cached before the rotation.
    other = Keyring(app.state.database, settings.encryption, clock=lambda: now[0])
    before = await other.for_writing(tenant_id)
    assert before is not None
    assert before.generation == 1
    await rotation.start(app.state.runtime, tenant_id)
    now[0] += settings.encryption.key_refresh_seconds - 1
    cached = await other.for_writing(tenant_id)
    assert cached is not None
    assert cached.generation == 1
    now[0] += 2
    after = await other.for_writing(tenant_id)
    assert after is not None
    assert after.generation == 2
    # Until the re-encryption finishes it still opens what the old key sealed.
    sealed = before.seal(b"older", b"ad")
    assert after.open(sealed, b"ad") == b"older"


async def test_rotation_refuses_clearly_when_encryption_is_off(
    database_url: str, tmp_path: Path
) -> None:
    off = encrypted_settings(database_url, tmp_path, enabled=False)
    runtime = Runtime(off)
    try:
        with pytest.raises(EncryptionError, match="encryption is off"):
            await rotation.start(runtime, 1)
    finally:
        await runtime.close()


def test_envelopes_name_their_key_generation() -> None:
    first = DataKey.from_bytes(7, b"a" * 32)
    second = DataKey.from_bytes(7, b"b" * 32, 2, {1: b"a" * 32})
    third = DataKey.from_bytes(7, b"c" * 32, 3, {2: b"b" * 32})
    old = first.seal(b"payload", b"ad")
    assert sealed_generation(old) == 1
    new = second.seal(b"payload", b"ad")
    assert sealed_generation(new) == 2
    assert second.is_current(new)
    assert not second.is_current(old)
    assert second.open(old, b"ad") == second.open(new, b"ad") == b"payload"
    text = second.seal_text("zeile", b"ad")
    assert text.startswith("cairn:enc:v2:g2:")
    assert second.open_text(first.seal_text("zeile", b"ad"), b"ad") == "zeile"
    assert third.open_text(text, b"ad") == "zeile"
    with pytest.raises(EncryptionError, match="key generation 1"):
        third.open(old, b"ad")
    with pytest.raises(EncryptionError, match="key generation 2"):
        first.open(new, b"ad")
    # A generation byte altered: the header is not authenticated, but the wrong key fails.
    tampered = bytearray(new)
    tampered[12] = 3
    with pytest.raises(EncryptionError, match="cannot be decrypted"):
        third.open(bytes(tampered), b"ad")
    with pytest.raises(EncryptionError, match="generation 0 is invalid"):
        DataKey.from_bytes(7, b"a" * 32, 0)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_platform_admin_rotates_through_the_api_and_workers_finish_it(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    await api.tenant("hr")
    await api.tenant("eng")
    editor = await api.user("ed", hr="editor")
    hr_admin = await api.user("boss", hr="admin")
    eng_admin = await api.user("other", eng="admin")
    await _upload(client, editor, "hr")
    tenant_id = await _tenant_id(app, "hr")
    app.state.runtime.settings = app.state.runtime.settings.model_copy(
        update={"encryption": settings.encryption.model_copy(update={"key_refresh_seconds": 0})}
    )
    url = "/api/v1/tenants/hr/encryption"
    # The tenant's own admin and editor: forbidden; another tenant's admin: not even told
    # that the tenant exists.
    for who, status in ((hr_admin, 403), (editor, 403), (eng_admin, 404)):
        assert_error(await client.post(f"{url}/rotate-key", headers=who), status)
        assert_error(await client.get(url, headers=who), status)
    admin = await api.admin()
    assert (await client.get(url, headers=admin)).json() == {
        "enabled": True,
        "generation": 1,
        "rotating": False,
    }
    response = await client.post(f"{url}/rotate-key", headers=admin)
    assert response.status_code == 202, response.text
    assert response.json() == {"enabled": True, "generation": 2, "rotating": True}
    for _ in range(200):
        state = (await client.get(url, headers=admin)).json()
        if not state["rotating"]:
            break
        await asyncio.sleep(0.1)
    assert state == {"enabled": True, "generation": 2, "rotating": False}
    assert await _generations(app, settings, tenant_id) == {2}
    app.state.retriever.cache.forget(tenant_id)
    assert any(CANARY in t for t in await _search(client, editor, "hr"))
    async with app.state.database.read_sessionmaker() as session:
        actions = list(
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.action == "tenant.key_rotate")
            )
        )
    assert actions == ["tenant.key_rotate"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_key_that_does_not_open_the_data_is_a_clear_error_not_a_leak(
    api: Api, client: httpx.AsyncClient, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    await api.tenant("hr")
    editor = await api.user("ed", hr="editor")
    await _upload(client, editor, "hr")
    # The operator points the server at another KEK.
    keyring: Keyring = app.state.runtime.keyring
    keyring.use_kek(load_kek(write_kek(tmp_path / "wrong-kek")))
    keyring.forget()
    app.state.retriever.cache.forget(await _tenant_id(app, "hr"))
    response = await client.post(
        "/api/v1/tenants/hr/search", json={"query": CANARY, "mode": "bm25"}, headers=editor
    )
    assert_error(response, 500, "decryption_failed")
    assert "fingerprint" not in response.text
    assert "tenant" not in response.json()["error"]["message"]
