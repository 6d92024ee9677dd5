"""The `cairn` command line finds its data or says in one line where it looked; every error is
one line on stderr with a non-zero exit (`--debug` shows the traceback)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app import cli
from app.kit.settings import PROJECT_ROOT, InsecureConfiguration

CAIRN = PROJECT_ROOT / ".venv" / "bin" / "cairn"
PASSWORD = "correct horse battery staple"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CAIRN_* setting of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CAIRN_")}
    env.update({"HF_HUB_OFFLINE": "1", **extra})
    return env


def run_cairn(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CAIRN), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder with no CAIRN_* settings, for in-process invocations."""
    for name in list(os.environ):
        if name.upper().startswith("CAIRN_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def only_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.skipif(not CAIRN.exists(), reason="needs the installed .venv/bin/cairn")
def test_outside_the_checkout_one_line_and_no_new_data(tmp_path: Path) -> None:
    result = run_cairn(tmp_path, "tenants", "create", "hr", "--name", "HR")
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith(f"error: no Cairn data at {tmp_path / 'data'} ")
    assert "looked at: --data-dir: not given, CAIRN_DATA_DIR: not set" in line
    assert "cairn migrate" in line
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing was created: no ./data, no fresh secrets.
    assert list(tmp_path.iterdir()) == []

    debug = run_cairn(tmp_path, "--debug", "tenants", "create", "hr", "--name", "HR")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
    assert "DataNotFound" in debug.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not CAIRN.exists(), reason="needs the installed .venv/bin/cairn")
def test_production_without_secrets_is_one_line(tmp_path: Path) -> None:
    result = run_cairn(tmp_path, "migrate", CAIRN_ENVIRONMENT="production")
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith("error: CAIRN_JWT_SECRET must be set")
    assert list(tmp_path.iterdir()) == []


def test_the_flag_wins_and_names_where_it_looked(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path / "from-env"))
    missing = tmp_path / "from-flag"
    result = invoke(
        "--data-dir", str(missing), "users", "create", "--username", "al", "--password", PASSWORD
    )
    assert result.exit_code == 2
    line = only_line(result.stderr)
    assert f"no Cairn data at {missing} (the folder does not exist; looked at: --data-dir)" in line
    assert not missing.exists()
    assert not (tmp_path / "from-env").exists()
    assert not (isolated / "data").exists()


def test_migrate_creates_the_data_then_other_commands_use_it(isolated: Path) -> None:
    assert invoke("users", "create", "--username", "al", "--password", PASSWORD).exit_code == 2
    assert not (isolated / "data").exists()
    migrated = invoke("migrate")
    assert migrated.exit_code == 0, migrated.output
    assert (isolated / "data" / "cairn.db").is_file()
    created = invoke("users", "create", "--username", "al", "--password", PASSWORD)
    assert created.exit_code == 0, created.output
    # The public id, never the database's counter.
    assert created.stdout.strip().startswith("created user al (usr_")


def test_a_cairn_toml_above_the_working_folder_is_found(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    (project / "cairn.toml").write_text('data_dir = "kb"\n')
    monkeypatch.chdir(project / "docs")
    assert invoke("migrate").exit_code == 0
    assert (project / "kb" / "cairn.db").is_file()
    assert not (project / "docs" / "data").exists()


def test_settings_errors_are_one_line(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_ENVIRONMENT", "production")
    insecure = invoke("migrate")
    assert insecure.exit_code == 2
    assert only_line(insecure.stderr).startswith("error: CAIRN_JWT_SECRET must be set")
    # --debug lets the exception through (the console entry point prints its traceback).
    debug = invoke("--debug", "migrate")
    assert isinstance(debug.exception, InsecureConfiguration)
    monkeypatch.setenv("CAIRN_ENVIRONMENT", "development")
    monkeypatch.setenv("CAIRN_PORT", "eighty")
    invalid = invoke("migrate")
    assert invalid.exit_code == 2
    assert only_line(invalid.stderr) == (
        "error: invalid setting port: Input should be a valid integer, unable to parse string "
        "as an integer"
    )


def test_ingest_of_nothing_supported_fails(isolated: Path) -> None:
    assert invoke("migrate").exit_code == 0
    created = invoke("tenants", "create", "hr", "--name", "HR")
    assert created.exit_code == 0
    # The public id, never the database counter.
    assert re.search(r"created tenant hr \(ten_[0-9a-f]{32}\)", created.stdout), created.stdout
    folder = isolated / "inbox"
    folder.mkdir()
    (folder / "setup.exe").write_bytes(b"MZ\x90\x00" + bytes(64))
    result = invoke("ingest", str(folder), "--tenant", "hr")
    assert result.exit_code == 1
    assert "queued 0 of 1 files; skipped 1: 1 unsupported type" in result.stdout
    assert only_line(result.stderr) == (
        "error: nothing queued: all 1 files skipped (1 unsupported type)"
    )
    empty = isolated / "empty"
    empty.mkdir()
    nothing = invoke("ingest", str(empty), "--tenant", "hr")
    assert nothing.exit_code == 1
    assert "no files found" in only_line(nothing.stderr)
