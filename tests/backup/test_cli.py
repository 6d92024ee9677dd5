"""`cairn backup` and `cairn restore` from the command line: every refusal is one line on
stderr with a non-zero exit, and nothing is restored from a backup that does not check out."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from fastapi import FastAPI
from typer.testing import CliRunner

from app import cli
from app.backup import pg_tools
from app.kit.settings import Settings
from tests.backup.helpers import empty_target
from tests.conftest import TEST_AUDIT_SECRET, TEST_SECRET, in_thread


def _env(settings: Settings) -> dict[str, str]:
    env = {
        "CAIRN_ENVIRONMENT": "test",
        "CAIRN_DATABASE_URL": settings.resolved_database_url,
        "CAIRN_JWT_SECRET": TEST_SECRET,
        "CAIRN_AUDIT_SECRET": TEST_AUDIT_SECRET,
        "HF_HUB_OFFLINE": "1",
    }
    if settings.backup.dir is not None:
        env["CAIRN_BACKUP__DIR"] = str(settings.backup.dir)
    return env


def cairn(settings: Settings, *args: str) -> Result:
    """Run `cairn --data-dir <settings' data dir> ARGS` in-process (off the event loop: a
    restore runs its own)."""
    runner = CliRunner()

    def invoke() -> Result:
        return runner.invoke(
            cli.app, ["--data-dir", str(settings.data_dir), *args], env=_env(settings)
        )

    result: Result = in_thread(invoke)
    return result


def one_error_line(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
async def backup(app: FastAPI, settings: Settings, tmp_path: Path) -> Path:
    """A backup of the app's (bootstrapped) deployment, taken through the CLI."""
    target = tmp_path / "backup"
    result = cairn(settings, "backup", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"backup written to {target} ")
    return target


async def test_restore_refuses_a_tampered_backup(
    backup: Path, backend: str, tmp_path: Path
) -> None:
    async with empty_target(backend, tmp_path) as target:
        database = next(p for p in backup.iterdir() if p.name.startswith("database."))
        original = database.read_bytes()
        database.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        line = one_error_line(cairn(target, "restore", str(backup)))
        assert line == f"error: backup file does not match its checksum: {database.name}"
        # Nothing was restored: the target is still empty.
        assert not target.data_dir.exists()

        database.write_bytes(original)
        extra = backup / "indexes" / "tenant-9" / "bm25-0000-v00000001.bm25.npz"
        extra.parent.mkdir(parents=True)
        extra.write_bytes(b"planted")
        line = one_error_line(cairn(target, "restore", str(backup)))
        assert line == f"error: backup file not in the manifest: {extra.relative_to(backup)}"
        shutil.rmtree(extra.parent)

        (backup / "tombstones.jsonl").unlink()
        line = one_error_line(cairn(target, "restore", str(backup)))
        assert line == "error: backup file missing: tombstones.jsonl"


async def test_restore_refuses_a_target_that_is_not_empty(
    backup: Path, settings: Settings, backend: str, tmp_path: Path
) -> None:
    # The live deployment itself: its data dir and its database hold data.
    line = one_error_line(cairn(settings, "restore", str(backup)))
    assert "is not empty" in line
    async with empty_target(backend, tmp_path) as target:
        target.data_dir.mkdir()
        (target.data_dir / "stray.txt").write_text("x")
        line = one_error_line(cairn(target, "restore", str(backup)))
        assert line == (
            f"error: restore target {target.data_dir} is not empty (it holds stray.txt); "
            "restore only into an empty data dir"
        )
        # The development secrets an operator puts back first are no obstacle.
        (target.data_dir / "stray.txt").unlink()
        (target.data_dir / ".audit_secret").write_text(TEST_AUDIT_SECRET)
        restored = cairn(target, "restore", str(backup))
        assert restored.exit_code == 0, restored.output
        assert (
            "0 tenant(s) deleted again, 0 document(s) purged again, 0 person(s) erased again"
            in restored.stdout
        )
        # Restored once, the target is no longer empty.
        assert "not empty" in one_error_line(cairn(target, "restore", str(backup)))


async def test_cli_errors_are_one_line(
    app: FastAPI, settings: Settings, backend: str, tmp_path: Path
) -> None:
    line = one_error_line(cairn(settings, "restore", str(tmp_path / "nowhere")))
    assert line == f"error: no backup at {tmp_path / 'nowhere'}: not a folder"
    (tmp_path / "half").mkdir()
    line = one_error_line(cairn(settings, "restore", str(tmp_path / "half")))
    assert line == f"error: no manifest.json in {tmp_path / 'half'}: not a complete backup"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    line = one_error_line(cairn(settings, "backup", str(tmp_path / "full")))
    assert line == f"error: {tmp_path / 'full'} is not an empty folder; name a new one"
    line = one_error_line(cairn(settings, "backup"))
    assert line == "error: no backup folder: name one, or set backup.dir (CAIRN_BACKUP__DIR)"


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_pg_dump_older_than_the_server_is_one_line(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = pg_tools.version_of

    def older(path: str) -> Any:
        found = real(path)
        return pg_tools.ToolVersion(found.path, found.major - 1, found.text)

    monkeypatch.setattr(pg_tools, "version_of", older)
    line = one_error_line(cairn(settings, "backup", str(tmp_path / "b")))
    assert line.startswith("error: pg_dump ")
    assert "cannot back up a PostgreSQL" in line
    assert "backup.pg_bin_dir" in line
    assert not (tmp_path / "b").exists()


def test_pg_restore_older_than_the_archive_is_refused() -> None:
    with pytest.raises(pg_tools.PostgresToolError, match="pg_restore 14 cannot read an archive"):
        pg_tools.check_restore_version(pg_tools.ToolVersion("pg_restore", 14, ""), 15)
    pg_tools.check_restore_version(pg_tools.ToolVersion("pg_restore", 16, ""), 15)
