"""Fixtures of the search tests over synthetic corpora: a migrated SQLite database of their
own and a folder for the tenants' shards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.kit.db import Database
from tests.conftest import TEST_SECRET, DatabaseFactory


@pytest.fixture
async def database(sqlite_factory: DatabaseFactory) -> AsyncIterator[Database]:
    url = await sqlite_factory.new()
    db = Database(url, session_info={"audit_secret": TEST_SECRET})
    yield db
    await db.dispose()


@pytest.fixture
def index_root(tmp_path: Path) -> Path:
    return tmp_path / "indexes"
