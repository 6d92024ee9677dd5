"""`cairn ingest` bulk-loads a folder; `cairn index rebuild` rewrites shards from the database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.kit.settings import Settings
from tests.conftest import Api
from tests.documents.helpers import bm25_hits
from tests.helpers import key_of
from tests.ingest.worker_process import REPO, assert_indexed_exactly_once, upload_app, worker_env

pytestmark = pytest.mark.slow


def cairn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_bulk_ingest_then_rebuild(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "pumps.txt").write_text("Hydraulic pumps are serviced every May.")
    (folder / "sub" / "guide.md").write_text("# Valves\n\nTurn the brass valve clockwise.")
    (folder / "sub" / "same.txt").write_text("Hydraulic pumps are serviced every May.")
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    (folder / ".hidden.txt").write_text("never loaded")
    env = worker_env(settings)
    async with upload_app(settings) as (app, client):
        tenant_id = key_of((await Api(client).tenant("ops"))["id"])
        boss = await Api(client).user("boss", ops="admin")

        result = cairn(env, "ingest", str(folder), "--tenant", "ops", "--tags", "plant")
        assert result.returncode == 0, result.stderr
        assert "queued 2 of 4 files" in result.stdout
        assert "now 2 ready; skipped 2: 1 unsupported type, 1 already in the tenant" in (
            result.stdout
        )
        assert "photo.png" in result.stdout  # unsupported type, reported and skipped
        assert "same.txt" in result.stdout  # duplicate content, reported and skipped
        assert "brass valve" in (await bm25_hits(app, tenant_id, "brass valve"))[0].lower()
        documents = (await client.get("/api/v1/tenants/ops/documents", headers=boss)).json()
        assert {d["filename"] for d in documents["items"]} == {"pumps.txt", "guide.md"}
        assert all(d["tags"] == ["plant"] for d in documents["items"])

        # Lose every shard file: the database holds the chunks and vectors to rebuild from.
        shutil.rmtree(settings.index_dir)
        rebuilt = cairn(env, "index", "rebuild", "--tenant", "ops")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "2 chunks indexed" in rebuilt.stdout
        for document in documents["items"]:
            await assert_indexed_exactly_once(app, key_of(document["id"]))
        assert "hydraulic" in (await bm25_hits(app, tenant_id, "hydraulic pumps"))[0].lower()

        missing = cairn(env, "ingest", str(folder), "--tenant", "nope")
        assert missing.returncode == 1
        assert "not found" in missing.stderr


def test_only_serve_or_migrate_creates_a_data_folder(tmp_path: Path) -> None:
    """A command on a missing data folder says so in one line and creates nothing (a typo in
    CAIRN_DATA_DIR must not start a second knowledge base with fresh secrets); after
    `cairn migrate` it works."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({"CAIRN_DATA_DIR": str(tmp_path / "fresh"), "CAIRN_ENVIRONMENT": "development"})
    refused = cairn(env, "tenants", "create", "ops", "--name", "Operations")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: no Cairn data at {tmp_path / 'fresh'} ")
    assert not (tmp_path / "fresh").exists()
    assert cairn(env, "migrate").returncode == 0
    created = cairn(env, "tenants", "create", "ops", "--name", "Operations")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "fresh" / "cairn.db").is_file()
