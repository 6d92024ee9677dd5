"""Scheduled backups: on the periodic runner every 15 minutes once backup.dir is set, the
newest backup.keep kept."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.backup.manifest import BackupInvalid, FileEntry, verify
from app.backup.schedule import (
    PARTIAL,
    BackupBusy,
    backup_to_root,
    complete_backups,
    prune,
)
from app.backup.snapshot import SnapshotState
from app.jobs.kinds import JobKind
from app.jobs.periodic import periodic_tasks
from app.kit.settings import Settings
from tests.conftest import Api, make_settings, running_app
from tests.documents.helpers import wait_for


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # No scheduled backups here: the test takes its own (test_the_schedule_runs_on_its_own).
    return make_settings(
        database_url,
        tmp_path / "data",
        backup={"dir": tmp_path / "backups", "keep": 2, "interval_minutes": 0},
    )


def test_every_15_minutes_once_a_backup_dir_is_set(tmp_path: Path) -> None:
    def backup_period(**backup: object) -> timedelta | None:
        settings = make_settings("sqlite+aiosqlite:///x.db", tmp_path, backup=backup)
        found = [t.every for t in periodic_tasks(settings) if t.kind is JobKind.BACKUP]
        return found[0] if found else None

    assert backup_period() is None
    assert backup_period(dir=tmp_path / "b") == timedelta(minutes=15)
    assert backup_period(dir=tmp_path / "b", interval_minutes=5) == timedelta(minutes=5)
    assert backup_period(dir=tmp_path / "b", interval_minutes=0) is None


async def test_retention_keeps_the_newest_n(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    taken = [(await asyncio.to_thread(backup_to_root, settings)).path for _ in range(3)]
    root = tmp_path / "backups"
    assert complete_backups(root) == taken[1:]
    assert not taken[0].exists()
    # Each kept one is a whole backup, restorable on its own, private to the server's user.
    assert all((path / "manifest.json").is_file() for path in taken[1:])
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_prune_leaves_young_partial_backups_and_other_files(tmp_path: Path) -> None:
    names = [f"cairn-backup-2026120{d}T000000000000Z" for d in range(1, 6)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    unfinished = tmp_path / "cairn-backup-20261207T000000000000Z"  # no manifest: unfinished
    unfinished.mkdir()
    young = tmp_path / f"{PARTIAL}cairn-backup-20261208T000000000000Z"
    old = tmp_path / f"{PARTIAL}cairn-backup-20261101T000000000000Z"
    young.mkdir()
    old.mkdir()
    os.utime(old, (time.time() - 7 * 3600, time.time() - 7 * 3600))
    (tmp_path / "tombstones.jsonl").write_text("")

    deleted = prune(tmp_path, keep=2)

    assert sorted(p.name for p in deleted) == sorted([*names[:3], old.name])
    assert [p.name for p in complete_backups(tmp_path)] == names[3:]
    assert unfinished.exists()
    assert young.exists()
    assert (tmp_path / "tombstones.jsonl").exists()


async def test_the_schedule_runs_on_its_own(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        backup={"dir": tmp_path / "backups", "interval_minutes": 0.01, "keep": 2},
        worker={"periodic_check_seconds": 0.2},
    )
    async with running_app(settings) as (_, api):
        await api.tenant("hr")
        root = tmp_path / "backups"
        deadline = time.monotonic() + 60
        # Every 0.6 s a backup job; retention holds the folder at 2.
        while len(complete_backups(root)) < 2 or time.monotonic() < deadline - 55:
            assert time.monotonic() < deadline, "no scheduled backups"
            await asyncio.sleep(0.2)
        assert len(complete_backups(root)) <= 2


async def test_one_backup_into_a_root_at_a_time(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    refused: list[Exception] = []

    def another(state: SnapshotState) -> None:
        try:
            backup_to_root(settings)
        except BackupBusy as exc:
            refused.append(exc)

    first = await asyncio.to_thread(backup_to_root, settings, while_locked=another)
    assert [str(e) for e in refused] == [f"another backup into {tmp_path / 'backups'} is running"]
    assert complete_backups(tmp_path / "backups") == [first.path]


async def test_unchanged_files_are_linked_from_the_previous_backup(
    app: FastAPI, api: Api, client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    await api.tenant("hr")
    admin = await api.user("hradmin", hr="admin")
    response = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("note.txt", b"The garage closes at nine on Fridays.")},
        headers=admin,
    )
    assert (await wait_for(client, admin, "hr", response.json()["id"]))["status"] == "ready"
    first = await asyncio.to_thread(backup_to_root, settings)
    second = await asyncio.to_thread(backup_to_root, settings)
    shared = [f.path for f in second.manifest.files if f.path.split("/")[0] in ("indexes", "files")]
    assert len(shared) == 3  # a vector shard, a BM25 shard, the stored file
    assert second.linked == 3
    for relative in shared:
        assert (first.path / relative).stat().st_ino == (second.path / relative).stat().st_ino
    assert _sorted(verify(second.path).files) == _sorted(second.manifest.files)

    # A damaged earlier copy is never carried on: the next backup copies afresh.
    blob = next(p for p in shared if p.startswith("files/"))
    (second.path / blob).write_bytes(b"bit rot")
    third = await asyncio.to_thread(backup_to_root, settings)
    assert third.linked == 2
    assert (third.path / blob).stat().st_ino != (second.path / blob).stat().st_ino
    assert _sorted(verify(third.path).files) == _sorted(third.manifest.files)
    with pytest.raises(BackupInvalid, match=f"does not match its checksum: {blob}"):
        verify(second.path)


def _sorted(entries: list[FileEntry]) -> list[FileEntry]:
    return sorted(entries, key=lambda e: e.path)
