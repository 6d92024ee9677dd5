"""Security hardening: the documents behind each answer's prompt, and a token version per user.

`chat_message_sources` lists every document whose passages were in an answer's prompt, so an
answer is withheld once any of them is hidden from its reader (citations alone miss passages
the answer used but did not cite). Existing answers get, conservatively, their cited documents
plus every document the audit log says was in a prompt of their session.

`users.token_version` is carried in each JWT; bumping it revokes the user's tokens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_message_sources",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["chat_messages.id"],
            name=op.f("fk_chat_message_sources_message_id_chat_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "document_id", name=op.f("pk_chat_message_sources")),
    )
    op.create_index(
        "ix_chat_message_sources_document", "chat_message_sources", ["document_id"]
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
        )
    _backfill_sources()


def _backfill_sources() -> None:
    bind = op.get_bind()
    by_session: dict[str, set[int]] = {}
    audited = bind.execute(
        sa.text(
            "SELECT target_id, details FROM audit_entries "
            "WHERE action = 'chat.ask' AND target_type = 'chat_session'"
        )
    )
    for target_id, details in audited:
        try:
            ids = json.loads(details).get("passage_document_ids", [])
        except (ValueError, AttributeError):
            continue
        by_session.setdefault(str(target_id), set()).update(int(i) for i in ids)
    answers = bind.execute(
        sa.text("SELECT id, session_id FROM chat_messages WHERE role = 'assistant'")
    ).all()
    cited: dict[int, set[int]] = {}
    for message_id, document_id in bind.execute(
        sa.text("SELECT message_id, document_id FROM chat_citations")
    ):
        cited.setdefault(int(message_id), set()).add(int(document_id))
    rows = [
        {"m": int(message_id), "d": document_id}
        for message_id, session_id in answers
        for document_id in sorted(
            cited.get(int(message_id), set()) | by_session.get(str(session_id), set())
        )
    ]
    if rows:
        bind.execute(
            sa.text(
                "INSERT INTO chat_message_sources (message_id, document_id) VALUES (:m, :d)"
            ),
            rows,
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")
    op.drop_index("ix_chat_message_sources_document", table_name="chat_message_sources")
    op.drop_table("chat_message_sources")
