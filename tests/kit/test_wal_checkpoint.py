"""The post-erasure WAL checkpoint: it empties the log, and a reader holding an old snapshot
never makes writers wait on it (a request reads, then writes its audit entry)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.kit.db import checkpoint_sqlite_wal


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    path = tmp_path / "wal.db"
    # Kept open like the server's pool: the last connection to close would checkpoint and
    # delete the log itself.
    keeper = sqlite3.connect(path, isolation_level=None)
    keeper.execute("PRAGMA journal_mode=WAL")
    keeper.execute("CREATE TABLE t (x TEXT)")
    keeper.execute("INSERT INTO t VALUES ('first')")
    yield path, f"sqlite+aiosqlite:///{path}"
    keeper.close()


def _insert(path: Path, value: str, timeout: float) -> None:
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        connection.execute("INSERT INTO t VALUES (?)", (value,))
    finally:
        connection.close()


def test_the_checkpoint_empties_the_log(database: tuple[Path, str]) -> None:
    path, url = database
    _insert(path, "canary", timeout=5)
    assert Path(f"{path}-wal").stat().st_size > 0
    assert checkpoint_sqlite_wal(url)
    assert Path(f"{path}-wal").stat().st_size == 0


def test_a_reader_on_an_old_snapshot_does_not_stall_writers(database: tuple[Path, str]) -> None:
    path, url = database
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds this snapshot
    _insert(path, "newer than the reader's snapshot", timeout=5)
    outcome: list[bool] = []
    checkpoint = threading.Thread(target=lambda: outcome.append(checkpoint_sqlite_wal(url)))
    checkpoint.start()
    time.sleep(0.5)  # let the checkpoint start waiting for the reader (ordering, not timing)
    try:
        # While the checkpoint waits for the reader, a writer still gets in: a checkpoint that
        # held new writers back until its own 30 s wait ran out made this raise "locked".
        _insert(path, "written during the checkpoint", timeout=5)
        assert checkpoint.is_alive(), "the reader's snapshot should hold the checkpoint back"
    finally:
        reader.execute("COMMIT")
        reader.close()
    checkpoint.join(timeout=60)
    assert outcome == [True]
    assert Path(f"{path}-wal").stat().st_size == 0


def test_it_gives_up_while_a_reader_stays(database: tuple[Path, str]) -> None:
    path, url = database
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    try:
        _insert(path, "newer than the reader's snapshot", timeout=5)
        assert not checkpoint_sqlite_wal(url, tries=2)
    finally:
        reader.execute("COMMIT")
        reader.close()
