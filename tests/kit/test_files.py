"""Everything Cairn writes under its data directory is private: 0700 directories, 0600 files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.kit.files import private_sqlite_file, secure_data_dir
from app.kit.migrate import upgrade
from app.main import create_app
from app.search.index.atomic import atomic_path, atomic_write_bytes
from tests.conftest import Api, in_thread, make_settings
from tests.documents.helpers import wait_for


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A common default umask (0644 files), so only Cairn's own measures can make files private."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _readable_by_others(root: Path) -> list[str]:
    loose = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            loose.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return loose


@pytest.mark.usefixtures("loose_umask")
async def test_a_fresh_data_dir_stays_private(tmp_path: Path) -> None:
    # The default database URL: SQLite inside the data directory, migrated as `cairn serve` does.
    data_dir = tmp_path / "data"
    data_dir.mkdir()  # made by the operator: 0755 under this umask
    settings = make_settings("", data_dir)  # no database_url: the default, under data_dir
    in_thread(upgrade, settings.resolved_database_url)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        api = Api(client)
        await api.tenant("hr")
        editor = await api.user("ed", hr="editor")
        response = await client.post(
            "/api/v1/tenants/hr/documents",
            files={"file": ("notes.txt", b"The quarterly zebrafish census counted 4211 fish.\n")},
            headers=editor,
        )
        assert response.status_code == 202, response.text
        document = await wait_for(client, editor, "hr", response.json()["id"])
        assert document["status"] == "ready", document
        written = {p.name for p in data_dir.rglob("*") if p.is_file()}
        assert {"cairn.db", "cairn.db-wal", "cairn.db-shm"} <= written
        assert any((settings.files_dir).rglob("*")), "the upload was stored"
        assert [p for p in settings.index_dir.rglob("*") if p.is_file()], "shards were written"
        # While the app runs: the -wal and -shm files exist now.
        assert _readable_by_others(data_dir) == []
    assert _readable_by_others(data_dir) == []


@pytest.mark.usefixtures("loose_umask")
def test_an_existing_data_dir_is_closed_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    secure_data_dir(data_dir, f"sqlite+aiosqlite:///{data_dir / 'cairn.db'}")
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "cairn.db").stat().st_mode) == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_sqlite_file_is_created_private_and_left_alone_otherwise(tmp_path: Path) -> None:
    database = tmp_path / "new" / "db.sqlite"
    private_sqlite_file(f"sqlite+aiosqlite:///{database}")
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    database.write_bytes(b"kept")
    private_sqlite_file(f"sqlite+aiosqlite:///{database}")
    assert database.read_bytes() == b"kept"
    # Nothing to create for PostgreSQL or an in-memory database.
    private_sqlite_file("postgresql+asyncpg://u@localhost/db")
    private_sqlite_file("sqlite+aiosqlite:///:memory:")


@pytest.mark.usefixtures("loose_umask")
def test_atomic_writes_are_private_whoever_writes(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "tenant-1" / "a.bin", b"data")
    with atomic_path(tmp_path / "tenant-1" / "b.bin") as tmp:
        tmp.write_bytes(b"written by a library with the process umask")
    for name in ("a.bin", "b.bin"):
        assert stat.S_IMODE((tmp_path / "tenant-1" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tenant-1").stat().st_mode) == 0o700
