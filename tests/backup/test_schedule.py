"""Scheduled backups: on the periodic runner every 15 minutes once backup.dir is set, the
newest backup.keep kept."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI

from app.backup.schedule import PARTIAL, backup_to_root, complete_backups, prune
from app.jobs.kinds import JobKind
from app.jobs.periodic import periodic_tasks
from app.kit.settings import Settings
from tests.conftest import make_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url, tmp_path / "data", backup={"dir": tmp_path / "backups", "keep": 2}
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
    # Each kept one is a whole backup, restorable on its own.
    assert all((path / "manifest.json").is_file() for path in taken[1:])


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
