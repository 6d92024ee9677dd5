"""A tenant deleted (and crypto-shredded) after a backup stays deleted after restoring that
backup, on SQLite and PostgreSQL: the backup's database still holds the tenant's rows and its
wrapped data key, which the KEK would unwrap, so the restore deletes it again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.backup.restore import restore
from app.backup.schedule import backup_to_root
from app.backup.tombstone_file import read as read_tombstones
from app.backup.tombstone_file import tenant_digest
from app.kit.settings import Settings
from app.models import Tenant, TenantKey, Tombstone
from tests.backup.helpers import empty_target, search
from tests.conftest import Api, make_settings, running_app
from tests.crypto.helpers import CANARY, write_kek
from tests.crypto.test_at_rest import _search, _tenant_id, _upload


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        backup={"dir": tmp_path / "backups", "interval_minutes": 0},
        encryption={"enabled": True, "kek_file": write_kek(tmp_path / "kek")},
    )


async def test_a_tenant_shredded_after_a_backup_stays_gone_after_restore(
    app: FastAPI,
    api: Api,
    client: httpx.AsyncClient,
    settings: Settings,
    backend: str,
    tmp_path: Path,
) -> None:
    await api.tenant("hr")
    await api.tenant("eng")
    hr = await api.user("hred", hr="editor")
    eng = await api.user("enged", eng="editor")
    await _upload(client, hr, "hr", 1)
    await _upload(client, eng, "eng", 2)
    eng_id = await _tenant_id(app, "eng")

    result = await asyncio.to_thread(backup_to_root, settings)

    deleted = await client.delete("/api/v1/tenants/eng?shred=true", headers=await api.admin())
    assert deleted.status_code == 204, deleted.text
    journal = read_tombstones(tmp_path / "backups" / "tombstones.jsonl")
    assert [(t.kind, t.subject_id, t.digest) for t in journal] == [
        ("tenant", eng_id, tenant_digest(eng_id, "eng"))
    ]
    assert b"eng" not in (tmp_path / "backups" / "tombstones.jsonl").read_bytes()

    async with empty_target(
        backend, tmp_path, embedded_workers=False, encryption=settings.encryption
    ) as target:
        report = await asyncio.to_thread(restore, target, result.path, tombstone_files=[])
        assert report.tenants_deleted == [eng_id]
        async with running_app(target) as (restored_app, restored):
            admin = await restored.admin()
            listed = await restored.client.get("/api/v1/tenants", headers=admin)
            assert [t["slug"] for t in listed.json()["items"]] == ["hr"]
            gone = await restored.client.get("/api/v1/tenants/eng", headers=admin)
            assert gone.status_code == 404
            assert not (target.files_dir / f"t{eng_id}").exists()
            assert not (target.index_dir / f"tenant-{eng_id}").exists()
            async with restored_app.state.database.read_sessionmaker() as session:
                assert await session.get(Tenant, eng_id) is None
                assert await session.get(TenantKey, eng_id) is None
                stones = {(t.kind, t.subject_id) for t in await session.scalars(select(Tombstone))}
            assert stones == {("tenant", eng_id)}
            # The other tenant is served as before, and a new tenant never takes the id.
            headers = await restored.headers("hred")
            assert any(CANARY in t for t in await _search(restored.client, headers, "hr"))
            assert await search(restored.client, headers, "hr", "travel policy", "bm25")
            created = await restored.client.post(
                "/api/v1/tenants", json={"slug": "ops", "name": "Ops"}, headers=admin
            )
            assert created.status_code == 201, created.text
            async with restored_app.state.database.read_sessionmaker() as session:
                ops_id = await session.scalar(select(Tenant.id).where(Tenant.slug == "ops"))
            assert ops_id is not None
            assert ops_id > eng_id
