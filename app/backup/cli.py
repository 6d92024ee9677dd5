"""`cairn backup` and `cairn restore` (registered in app/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.backup.restore import RestoreReport, restore
from app.backup.schedule import backup_to_root
from app.backup.writer import BackupResult, write_backup
from app.kit.settings import Settings

BackupDir = Annotated[
    Path | None,
    typer.Argument(
        help="a new or empty folder to write the backup to (default: a new timestamped "
        "folder in backup.dir, with retention applied)"
    ),
]
RestoreDir = Annotated[
    Path,
    typer.Argument(help="the backup folder (or a backup root: its newest complete backup)"),
]
TombstoneFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--tombstones",
        help="a tombstone journal to apply too (repeatable); the configured journal and "
        "the one in the backup's root are read anyway",
    ),
]


def run_backup(settings: Settings, target: Path | None) -> str:
    """Take one backup now; what to print."""
    result: BackupResult = (
        write_backup(settings, target) if target is not None else backup_to_root(settings)
    )
    files = len(result.manifest.files)
    size = sum(f.size for f in result.manifest.files)
    note = (
        f"; {result.purged_meanwhile} document(s) purged during the backup are tombstoned"
        if result.purged_meanwhile
        else ""
    )
    return (
        f"backup written to {result.path} ({result.manifest.backend}, schema "
        f"{result.manifest.schema_revision}, {files} files, {size} bytes){note}"
    )


def run_restore(settings: Settings, backup: Path, tombstones: list[Path]) -> str:
    """Restore a backup into the empty data dir and database; what to print."""
    report: RestoreReport = restore(settings, backup, tombstone_files=tombstones)
    return (
        f"restored {report.manifest.backend} backup of {report.manifest.created_at} into "
        f"{settings.data_dir}; {report.tombstones} tombstone(s) applied: "
        f"{len(report.tenants_deleted)} tenant(s) deleted again, "
        f"{len(report.documents_purged)} document(s) purged again, "
        f"{len(report.users_erased)} person(s) erased again"
    )
