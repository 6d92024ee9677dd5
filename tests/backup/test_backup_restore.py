"""Issue 24: an online backup restores to the same search results, and purges and erasures
done after it stay done after restoring it — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.backup.restore import restore
from app.backup.schedule import backup_to_root
from app.backup.snapshot import SnapshotState
from app.backup.tombstone_file import read as read_tombstones
from app.backup.writer import write_backup
from app.kit.migrate import head_revisions
from app.kit.public_ids import IdKind, public_ids
from app.kit.settings import Settings
from app.models import Document, Tombstone, User
from tests.backup.helpers import empty_target, search, until
from tests.conftest import Api, make_settings, running_app
from tests.documents.helpers import wait_for

TOPICS = {
    "boiler": "The boiler room on level two is inspected every March by the facilities team.",
    "canteen": "The canteen serves vegetarian lunch on Tuesdays and fish on Fridays.",
    "badges": "Lost visitor badges must be reported to reception within one working day.",
    "laptops": "Company laptops are replaced after four years or when the battery fails.",
    "parking": "Parking permits for the staff garage are issued by the facilities desk.",
}
QUERIES = ["boiler inspection", "vegetarian lunch", "lost badge", "laptop battery", "garage"]
CANARY = "zqbackupcanary7731"
CANARY_DOC = f"Incident note: the {CANARY} pump failed twice in the west wing.".encode()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # No scheduled backups: the tests take theirs at chosen moments.
    return make_settings(
        database_url,
        tmp_path / "data",
        backup={"dir": tmp_path / "backups", "interval_minutes": 0},
    )


async def _upload(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, text: bytes
) -> str:
    response = await client.post(
        "/api/v1/tenants/hr/documents", files={"file": (name, text)}, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _world(api: Api, client: httpx.AsyncClient) -> dict[str, str]:
    await api.tenant("hr")
    admin = await api.user("hradmin", hr="admin")
    for name, text in TOPICS.items():
        doc = await _upload(client, admin, f"{name}.txt", text.encode())
        assert (await wait_for(client, admin, "hr", doc))["status"] == "ready"
    return admin


async def _ready(client: httpx.AsyncClient, headers: dict[str, str], docs: list[str]) -> bool:
    for doc in docs:
        response = await client.get(f"/api/v1/tenants/hr/documents/{doc}", headers=headers)
        if response.json()["status"] != "ready":
            return False
    return bool(docs)


def _files_with(root: Path, needle: bytes) -> list[Path]:
    return [
        Path(folder) / name
        for folder, _, names in os.walk(root)
        for name in names
        if needle in (Path(folder) / name).read_bytes()
    ]


async def test_backup_during_uploads_restores_the_same_search_results(
    app: FastAPI,
    api: Api,
    client: httpx.AsyncClient,
    settings: Settings,
    backend: str,
    tmp_path: Path,
) -> None:
    admin = await _world(api, client)
    loop = asyncio.get_running_loop()
    at_backup: dict[tuple[str, str], list[tuple[str, str, float]]] = {}

    async def search_all() -> None:
        for query in QUERIES:
            for mode in ("hybrid", "bm25", "vector"):
                at_backup[(query, mode)] = await search(client, admin, "hr", query, mode)

    def while_locked(state: SnapshotState) -> None:
        # Index writers wait here: what search serves now is what the snapshot holds.
        asyncio.run_coroutine_threadsafe(search_all(), loop).result(timeout=120)

    uploaded: list[str] = []

    async def keep_uploading() -> None:
        for n in range(8):
            text = f"Memo {n}: the garage and the boiler room close early on holiday {n}."
            uploaded.append(await _upload(client, admin, f"memo-{n}.txt", text.encode()))
            await asyncio.sleep(0.3)

    uploads = asyncio.create_task(keep_uploading())
    # Backed up while memos are in every state: indexed, being ingested, still uploading.
    await until(lambda: _ready(client, admin, uploaded[:1]))
    result = await asyncio.to_thread(
        write_backup, settings, tmp_path / "backups" / "one", while_locked=while_locked
    )
    assert not uploads.done(), "the backup ran while uploads went on"
    await uploads
    memos = uploaded
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["backend"] == ("sqlite" if backend == "sqlite" else "postgresql")
    assert manifest["schema_revision"] in head_revisions()
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert any(f["path"].startswith("indexes/") for f in manifest["files"])
    assert any(f["path"].startswith("files/") for f in manifest["files"])
    assert at_backup[("boiler inspection", "bm25")], "the query set finds something"
    memo_hits = {hit[0] for hits in at_backup.values() for hit in hits} & set(memos)
    assert memo_hits, "memos indexed before the backup are among the results"
    # The original moves on past the backup point.
    for memo in memos:
        await wait_for(client, admin, "hr", memo)

    async with empty_target(backend, tmp_path, embedded_workers=False) as target:
        report = await asyncio.to_thread(restore, target, result.path, tombstone_files=[])
        assert report.documents_purged == []
        assert report.users_erased == []
        async with running_app(target) as (_, restored):
            headers = await restored.headers("hradmin")
            for (query, mode), expected in at_backup.items():
                got = await search(restored.client, headers, "hr", query, mode)
                assert got == expected, (query, mode)


async def test_purge_and_erasure_after_a_backup_stay_done_after_restore(
    app: FastAPI,
    api: Api,
    client: httpx.AsyncClient,
    settings: Settings,
    backend: str,
    tmp_path: Path,
) -> None:
    admin = await _world(api, client)
    victim = await api.user("victim", hr="viewer")
    asked = await client.post("/api/v1/tenants/hr/search", json={"query": "boiler"}, headers=victim)
    assert asked.status_code == 200
    canary = await _upload(client, admin, "pump.txt", CANARY_DOC)
    assert (await wait_for(client, admin, "hr", canary))["status"] == "ready"
    canary_key = public_ids().decode(IdKind.DOCUMENT, canary)
    assert canary_key is not None
    async with app.state.database.read_sessionmaker() as session:
        row = (
            await session.execute(
                select(Document.tenant_id, Document.content_sha256).where(Document.id == canary_key)
            )
        ).one()
        victim_id = await session.scalar(select(User.id).where(User.username == "victim"))
    tenant_id, sha = row

    result = await asyncio.to_thread(backup_to_root, settings)

    # After the backup: the canary is purged and the victim erased on the original.
    purge = await client.delete(f"/api/v1/tenants/hr/documents/{canary}?purge=true", headers=admin)
    assert purge.status_code == 202, purge.text

    async def purged() -> bool:
        async with app.state.database.read_sessionmaker() as session:
            return await session.get(Document, canary_key) is None

    await until(purged)
    # One uploaded and purged after the backup: the backup never held it, but a restored
    # server must not hand its id to a new document.
    late = await _upload(client, admin, "late.txt", b"A late note about the west wing lift.")
    assert (await wait_for(client, admin, "hr", late))["status"] == "ready"
    late_key = public_ids().decode(IdKind.DOCUMENT, late)
    assert late_key is not None
    purge = await client.delete(f"/api/v1/tenants/hr/documents/{late}?purge=true", headers=admin)
    assert purge.status_code == 202, purge.text

    async def late_purged() -> bool:
        async with app.state.database.read_sessionmaker() as session:
            return await session.get(Document, late_key) is None

    await until(late_purged)
    erase = await client.post(
        "/api/v1/privacy/erase", json={"username": "victim"}, headers=await api.admin()
    )
    assert erase.status_code == 200, erase.text
    journal = read_tombstones(tmp_path / "backups" / "tombstones.jsonl")
    assert {(t.kind, t.subject_id) for t in journal} == {
        ("document", canary_key),
        ("document", late_key),
        ("user", victim_id),
    }
    # Ids and hashes only: nothing of the document's text or the person's name.
    raw = (tmp_path / "backups" / "tombstones.jsonl").read_bytes()
    assert CANARY.encode() not in raw
    assert b"victim" not in raw
    assert b"pump" not in raw
    # The backup itself still holds both (taken before).
    assert _files_with(result.path, CANARY.encode())

    async with empty_target(backend, tmp_path, embedded_workers=False) as target:
        report = await asyncio.to_thread(restore, target, result.path, tombstone_files=[])
        assert report.documents_purged == [canary_key]
        assert report.users_erased == [victim_id]
        async with running_app(target) as (restored_app, restored):
            headers = await restored.headers("hradmin")
            for mode in ("hybrid", "bm25", "vector"):
                hits = await restored.client.post(
                    "/api/v1/tenants/hr/search",
                    json={"query": f"{CANARY} pump west wing", "mode": mode},
                    headers=headers,
                )
                assert hits.status_code == 200
                assert canary not in {h["document_id"] for h in hits.json()["hits"]}, mode
                assert CANARY not in hits.text
            gone = await restored.client.get(
                f"/api/v1/tenants/hr/documents/{canary}", headers=headers
            )
            assert gone.status_code == 404
            # Its stored file, its shard entries and every other file of the data dir.
            assert not (target.files_dir / f"t{tenant_id}" / sha[:2] / sha).exists()
            assert _files_with(target.data_dir, CANARY.encode()) == []
            login = await restored.client.post(
                "/api/v1/auth/token",
                data={"username": "victim", "password": "victim-password"},
            )
            assert login.status_code == 401
            async with restored_app.state.database.read_sessionmaker() as session:
                assert await session.get(Document, canary_key) is None
                assert (
                    await session.scalar(
                        select(func.count()).select_from(User).where(User.username == "victim")
                    )
                    == 0
                )
                stones = {(t.kind, t.subject_id) for t in await session.scalars(select(Tombstone))}
                assert stones == {
                    ("document", canary_key),
                    ("document", late_key),
                    ("user", victim_id),
                }
            # The others are still there, and a new document never takes the purged one's id.
            still = await search(restored.client, headers, "hr", "boiler inspection", "bm25")
            assert still
            newer = await restored.client.post(
                "/api/v1/tenants/hr/documents",
                files={"file": ("new.txt", b"A new note about the canteen menu.")},
                headers=headers,
            )
            assert newer.status_code == 202, newer.text
            new_key = public_ids().decode(IdKind.DOCUMENT, newer.json()["id"])
            assert new_key is not None
            assert new_key > late_key
