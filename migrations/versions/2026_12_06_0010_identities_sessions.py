"""Identities that are never reused, and sessions the server can end.

- SQLite hands the newest deleted row's id to the next insert unless the table is declared
  AUTOINCREMENT. Every table whose id leaves the server (a token, a public id in a response, a
  receipt, an audit entry) is rebuilt with AUTOINCREMENT, and its counter starts above every id
  the audit log or a deletion receipt still names, so an id erased before this revision is not
  handed out again either. PostgreSQL sequences never go back; nothing to do there.
- `users.subject`: a random per-account value carried in tokens as `sub`; it dies with the row,
  so an old token cannot match a newer account even if a row number were ever reused.
- `auth_sessions`: one row per sign-in (API token or browser cookie), named in the token as
  `sid`. Signing out, a password change or reset, deactivation and erasure end it at once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables whose ids appear outside the database (public ids, tokens, receipts, audit entries).
NEVER_REUSED = (
    "tenants",
    "users",
    "api_keys",
    "documents",
    "chunks",
    "jobs",
    "chat_sessions",
    "chat_messages",
    "audit_entries",
    "deletion_receipts",
    "auth_sessions",
)


def _subject() -> str:
    return secrets.token_urlsafe(24)


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("subject", sa.String(64), nullable=True))
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("subject", sa.String))
    for (user_id,) in bind.execute(sa.select(users.c.id)).all():
        bind.execute(users.update().where(users.c.id == user_id).values(subject=_subject()))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("subject", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint(batch.f("uq_users_subject"), ["subject"])

    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("handle", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
        sa.UniqueConstraint("handle", name=op.f("uq_auth_sessions_handle")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_auth_sessions_user", "auth_sessions", ["user_id", "ended_at"])
    op.create_index("ix_auth_sessions_expires", "auth_sessions", ["expires_at"])

    if bind.dialect.name == "sqlite":
        for table in NEVER_REUSED:
            if table == "auth_sessions":
                continue
            # Rebuilt (copy, drop, rename) with the same columns, constraints and indexes;
            # migrations/env.py turns foreign-key enforcement off around this so the drop
            # does not cascade into the child tables.
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass
        _start_counters_above_named_ids()


def _start_counters_above_named_ids() -> None:
    """Start users' and documents' counters above any id an audit entry or a receipt still
    names: those rows may have been erased before this revision made ids unique forever."""
    bind = op.get_bind()
    named = {
        "users": [
            "SELECT MAX(actor_id) FROM audit_entries",
            "SELECT MAX(subject_id) FROM deletion_receipts WHERE subject_type = 'user'",
        ],
        "documents": [
            "SELECT MAX(subject_id) FROM deletion_receipts WHERE subject_type = 'document'",
        ],
    }
    for table, queries in named.items():
        highest = 0
        for query in queries:
            try:
                value = bind.execute(sa.text(query)).scalar()
            except sa.exc.DBAPIError:
                continue
            if isinstance(value, int):
                highest = max(highest, value)
        current = bind.execute(sa.text(f"SELECT MAX(id) FROM {table}")).scalar() or 0
        if highest <= current:
            continue
        updated = bind.execute(
            sa.text("UPDATE sqlite_sequence SET seq = :seq WHERE name = :name"),
            {"seq": highest, "name": table},
        )
        if updated.rowcount == 0:
            bind.execute(
                sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"),
                {"seq": highest, "name": table},
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table in NEVER_REUSED:
            if table == "auth_sessions":
                continue
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
            ):
                pass
    op.drop_index("ix_auth_sessions_expires", table_name="auth_sessions")
    op.drop_index("ix_auth_sessions_user", table_name="auth_sessions")
    op.drop_table("auth_sessions")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_subject", type_="unique")
        batch.drop_column("subject")
