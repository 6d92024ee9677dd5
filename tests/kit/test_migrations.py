"""Migrations upgrade to head and downgrade to base on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

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


async def _execute(url: str, statements: list[str]) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.exec_driver_sql(query)]
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


# A tenant, a user and one chat session of theirs (id 3), as the chat migration tests need.
_TENANT_USER_SESSION = [
    "INSERT INTO tenants (id, slug, name, created_at) VALUES (1, 't', 'T', '2026-01-01')",
    "INSERT INTO users (id, username, password_hash, is_platform_admin, is_active, "
    "created_at) VALUES (1, 'u', 'x', false, true, '2026-01-01')",
    "INSERT INTO chat_sessions (id, tenant_id, user_id, title, created_at, updated_at) "
    "VALUES (3, 1, 1, 'q', '2026-01-01', '2026-01-01')",
]


@pytest.mark.usefixtures("backend")
async def test_0005_gives_old_answers_every_document_their_session_was_prompted_with(
    database_url: str,
) -> None:
    """Answers stored before 0005 depend on their cited documents plus every document the
    audit log says was in a prompt of their session: over-withholding is safe, a leak is not."""
    in_thread(downgrade, database_url, "0004")
    statements = [
        *_TENANT_USER_SESSION,
        "INSERT INTO documents (id, tenant_id, title, media_type, size_bytes, content_sha256, "
        "sensitivity, status, progress, chunk_count, created_at, updated_at) VALUES "
        "(7, 1, 'public', 'text/plain', 1, 'a', 'public', 'ready', 1, 1, "
        "'2026-01-01', '2026-01-01')",
        "INSERT INTO chat_messages (id, session_id, role, content, created_at) VALUES "
        "(10, 3, 'user', 'q', '2026-01-01'), (11, 3, 'assistant', 'a', '2026-01-01')",
        "INSERT INTO chat_citations (message_id, ref, document_id, chunk_id, title, snippet) "
        "VALUES (11, 1, 7, 70, 'public', 's')",
        "INSERT INTO audit_entries (chain, seq, created_at, action, outcome, tenant_id, "
        "target_type, target_id, details, prev_hash, entry_hash) VALUES ('tenant:1', 1, "
        "'2026-01-01', 'chat.ask', 'success', 1, 'chat_session', '3', "
        "'{\"passage_document_ids\":[7,9]}', '0', '1')",
    ]
    await _execute(database_url, statements)
    in_thread(upgrade, database_url, "head")
    rows = await _rows(
        database_url,
        "SELECT message_id, document_id FROM chat_message_sources ORDER BY document_id",
    )
    assert rows == [(11, 7), (11, 9)]


@pytest.mark.usefixtures("backend")
async def test_0009_leaves_what_the_check_made_of_old_answers_unknown(database_url: str) -> None:
    """Answers stored before 0009 read back with no `grounded`, check outcome or note (NULL),
    never as if they had been checked."""
    in_thread(downgrade, database_url, "0008")
    statements = [
        *_TENANT_USER_SESSION,
        "INSERT INTO chat_messages (id, session_id, role, content, finish_reason, created_at) "
        "VALUES (10, 3, 'user', 'q', NULL, '2026-01-01'), "
        "(11, 3, 'assistant', 'a', 'stop', '2026-01-01')",
    ]
    await _execute(database_url, statements)
    in_thread(upgrade, database_url, "head")
    rows = await _rows(
        database_url, "SELECT id, content, grounded, check_outcome, note FROM chat_messages"
    )
    assert sorted(rows) == [(10, "q", None, None, None), (11, "a", None, None, None)]


@pytest.mark.usefixtures("backend")
async def test_0010_keeps_every_row_and_never_reuses_an_id(database_url: str) -> None:
    """Rebuilding SQLite's tables AUTOINCREMENT keeps children (no cascade), gives every user a
    subject, and starts the users' counter above an erased id that a receipt still names."""
    in_thread(downgrade, database_url, "0009")
    statements = [
        *_TENANT_USER_SESSION,
        "INSERT INTO chat_messages (id, session_id, role, content, created_at) VALUES "
        "(10, 3, 'user', 'q', '2026-01-01'), (11, 3, 'assistant', 'a', '2026-01-01')",
        "INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) "
        "VALUES (1, 1, 'viewer', '2026-01-01', '2026-01-01')",
        # User 7 was erased before this revision; its receipt (and old tokens) name the id.
        "INSERT INTO deletion_receipts (subject_type, subject_id, requested_at, status, "
        "removed, verification) VALUES ('user', 7, '2026-01-01', 'done', '{}', '{}')",
    ]
    await _execute(database_url, statements)
    in_thread(upgrade, database_url, "head")
    assert await _rows(database_url, "SELECT id FROM chat_messages ORDER BY id") == [(10,), (11,)]
    assert await _rows(database_url, "SELECT user_id FROM memberships") == [(1,)]
    [(subject,)] = await _rows(database_url, "SELECT subject FROM users")
    assert len(subject) >= 32
    if "sqlite" not in database_url:
        return  # PostgreSQL sequences never go back; nothing was rebuilt there
    await _execute(
        database_url,
        [
            "INSERT INTO users (username, password_hash, is_platform_admin, is_active, "
            "created_at, token_version, subject) VALUES ('n', 'x', false, true, '2026-01-01', 0, "
            "'s2')"
        ],
    )
    [(new_id,)] = await _rows(database_url, "SELECT id FROM users WHERE username = 'n'")
    assert new_id > 7
