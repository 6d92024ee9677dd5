"""The synchronous read engine search uses from its worker threads."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from app.kit.db import create_blocking_read_engine


def test_sqlite_reads_through_pysqlite_with_a_memory_map(tmp_path: Path) -> None:
    engine = create_blocking_read_engine(f"sqlite+aiosqlite:///{tmp_path / 'cairn.db'}")
    try:
        assert engine.dialect.driver == "pysqlite"
        with engine.connect() as connection:
            assert connection.scalar(text("PRAGMA mmap_size")) > 0
            assert connection.scalar(text("SELECT 1")) == 1
    finally:
        engine.dispose()


def test_postgresql_reads_through_psycopg() -> None:
    engine = create_blocking_read_engine("postgresql+asyncpg://user@127.0.0.1:5432/test")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="no synchronous driver"):
        create_blocking_read_engine("mysql+aiomysql://user@localhost/test")
