"""Apply Alembic migrations from code (cairn migrate, cairn serve, tests)."""

from __future__ import annotations

from functools import cache

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, Table, inspect, select
from sqlalchemy.engine import Connection

from app.kit.settings import PROJECT_ROOT


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at migrations/ and the given database."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Downgrade the database to `revision`."""
    command.downgrade(alembic_config(database_url), revision)


def ensure_embedded_schema(database_url: str) -> None:
    """On the embedded SQLite default, bring the schema to head (a no-op when it is), so any
    `cairn` command works on a fresh data folder. PostgreSQL is migrated once per deploy with
    `cairn migrate`, never implicitly: replicas starting together would race."""
    from app.kit.db import is_sqlite

    if is_sqlite(database_url):
        upgrade(database_url)


@cache
def head_revisions() -> frozenset[str]:
    """The head revision(s) of migrations/ (read once per process)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("")).get_heads())


# Alembic's version table, read directly: a MigrationContext would log two INFO lines per
# readiness probe.
_VERSION_TABLE = Table("alembic_version", MetaData(), Column("version_num", String(32)))


def current_revisions(connection: Connection) -> frozenset[str]:
    """The revision(s) the database is at (empty when it was never migrated)."""
    if not inspect(connection).has_table(_VERSION_TABLE.name):
        return frozenset()
    return frozenset(connection.scalars(select(_VERSION_TABLE.c.version_num)))
