"""Migrations upgrade to head and downgrade to base on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from app.kit.db import create_engine
from app.kit.migrate import downgrade, upgrade
from app.models import Base
from tests.conftest import in_thread


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("backend")
async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    # database_url is already at head (cloned from the migrated template).
    assert set(Base.metadata.tables) <= await _tables(database_url)
    in_thread(downgrade, database_url, "base")
    assert await _tables(database_url) <= {"alembic_version"}
    in_thread(upgrade, database_url, "head")
    assert set(Base.metadata.tables) <= await _tables(database_url)
