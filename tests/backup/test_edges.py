"""Edges of a backup: a source older than the code (migrated on restore), a purge that
deletes a stored file between the snapshot and its copy, a backup folder inside the data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update

from app.backup.restore import restore
from app.backup.snapshot import BackupFailed, SnapshotState
from app.backup.tombstone_file import read as read_tombstones
from app.backup.writer import write_backup
from app.kit.db import create_engine
from app.kit.migrate import downgrade, head_revisions
from app.kit.public_ids import IdKind, public_ids
from app.kit.settings import Settings
from app.models import Document
from tests.backup.helpers import empty_target
from tests.conftest import Api, in_thread, make_settings
from tests.documents.helpers import wait_for


async def _scalar(url: str, query: str) -> object:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return (await connection.execute(text(query))).scalar()
    finally:
        await engine.dispose()


async def test_an_older_backup_is_migrated_to_head_on_restore(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    in_thread(downgrade, database_url, "0011")
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO tenants (slug, name, created_at) VALUES ('old', 'Old', '2026-01-01')")
        )
    await engine.dispose()
    source = make_settings(database_url, tmp_path / "data")
    source.data_dir.mkdir()
    result = await asyncio.to_thread(write_backup, source, tmp_path / "backup")
    assert result.manifest.schema_revision == "0011"

    async with empty_target(backend, tmp_path) as target:
        await asyncio.to_thread(restore, target, result.path, tombstone_files=[])
        url = target.resolved_database_url
        assert await _scalar(url, "SELECT version_num FROM alembic_version") in head_revisions()
        assert await _scalar(url, "SELECT slug FROM tenants") == "old"
        assert await _scalar(url, "SELECT count(*) FROM tombstones") == 0


async def test_a_stored_file_purged_during_the_backup_is_tombstoned(
    app: FastAPI,
    api: Api,
    client: httpx.AsyncClient,
    settings: Settings,
    backend: str,
    tmp_path: Path,
) -> None:
    await api.tenant("hr")
    admin = await api.user("hradmin", hr="admin")
    response = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("gone.txt", b"A note that is purged while the backup runs.")},
        headers=admin,
    )
    doc = response.json()["id"]
    assert (await wait_for(client, admin, "hr", doc))["status"] == "ready"
    key = public_ids().decode(IdKind.DOCUMENT, doc)
    async with app.state.database.read_sessionmaker() as session:
        stored = (
            await session.execute(
                select(Document.tenant_id, Document.content_sha256).where(Document.id == key)
            )
        ).one()
    loop = asyncio.get_running_loop()

    async def purge_started() -> None:
        # What a purge does first to the live data, after the snapshot was taken.
        async with app.state.database.sessionmaker() as session, session.begin():
            await session.execute(
                update(Document).where(Document.id == key).values(status="purging")
            )
        app.state.runtime.store.delete(*stored)

    def while_locked(state: SnapshotState) -> None:
        asyncio.run_coroutine_threadsafe(purge_started(), loop).result(timeout=60)

    result = await asyncio.to_thread(
        write_backup, settings, tmp_path / "backup", while_locked=while_locked
    )
    assert result.purged_meanwhile == 1
    assert [(t.kind, t.subject_id) for t in read_tombstones(result.path / "tombstones.jsonl")] == [
        ("document", key)
    ]
    async with empty_target(backend, tmp_path, embedded_workers=False) as target:
        report = await asyncio.to_thread(restore, target, result.path, tombstone_files=[])
        assert report.documents_purged == [key]


def test_a_backup_inside_the_data_dir_is_refused(tmp_path: Path) -> None:
    settings = make_settings("sqlite+aiosqlite:///x.db", tmp_path / "data")
    with pytest.raises(BackupFailed, match="is inside the data dir"):
        write_backup(settings, tmp_path / "data" / "backups" / "one")
