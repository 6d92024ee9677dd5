"""`cairn encryption enable | rotate-kek | rotate-tenant-key | status` and `cairn tenants
delete --shred`, in process on an embedded (SQLite) data dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app import cli
from tests.conftest import TEST_AUDIT_SECRET, TEST_SECRET
from tests.crypto.helpers import write_kek


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("CAIRN_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = tmp_path / "data"
    monkeypatch.setenv("CAIRN_DATA_DIR", str(data))
    monkeypatch.setenv("CAIRN_JWT_SECRET", TEST_SECRET)
    monkeypatch.setenv("CAIRN_AUDIT_SECRET", TEST_AUDIT_SECRET)
    monkeypatch.setenv("CAIRN_ENCRYPTION__ENABLED", "true")
    monkeypatch.setenv("CAIRN_ENCRYPTION__KEK_FILE", str(write_kek(tmp_path / "kek")))
    return data


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def test_status_enable_rotate_and_shred(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("migrate").exit_code == 0
    assert invoke("tenants", "create", "hr", "--name", "HR").exit_code == 0
    status = invoke("encryption", "status")
    assert status.exit_code == 0, status.output
    assert "hr: key none; chunks 0/0, files 0/0, shards 0/0" in status.output
    enabled = invoke("encryption", "enable")
    assert enabled.exit_code == 0, enabled.output
    assert "encrypted 0 chunk rows, 0 files, 0 shard files" in enabled.output
    status = invoke("encryption", "status")
    assert "hr: key none" not in status.output
    assert "(complete)" in status.output

    loose = write_kek(tmp_path / "loose-kek", 0o644)
    refused = invoke("encryption", "rotate-kek", "--new-kek-file", str(loose))
    assert refused.exit_code == 1
    assert "readable by group or others" in refused.output
    new = write_kek(tmp_path / "kek-2")
    rotated = invoke("encryption", "rotate-kek", "--new-kek-file", str(new))
    assert rotated.exit_code == 0, rotated.output
    assert "re-wrapped 1 tenant keys" in rotated.output
    # The old KEK no longer unwraps the tenant's key: one clear line.
    old = invoke("encryption", "enable")
    assert old.exit_code == 1
    assert "wrapped under another KEK" in old.output
    monkeypatch.setenv("CAIRN_ENCRYPTION__KEK_FILE", str(new))
    assert invoke("encryption", "enable").exit_code == 0

    key = invoke("encryption", "rotate-tenant-key", "hr", "--settle-seconds", "0")
    assert key.exit_code == 0, key.output
    assert "hr: key generation 2 in force, the old key destroyed" in key.output
    assert "(generation 2)" in invoke("encryption", "status").output
    unknown = invoke("encryption", "rotate-tenant-key", "nope", "--settle-seconds", "0")
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines() == ["error: no tenant 'nope'"]

    deleted = invoke("tenants", "delete", "hr", "--shred", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted tenant hr (data key destroyed first)" in deleted.output
    assert "hr:" not in invoke("encryption", "status").output
    missing = invoke("tenants", "delete", "hr", "--yes")
    assert missing.exit_code == 1
    assert "not found" in missing.output
