"""Tombstones: purges and erasures remembered after the data is gone.

A restored backup taken before a purge or an erasure learns of it from these rows (carried in
every later backup) and from the append-only journal outside the database, and does it again
before the server serves (app/backup/restore.py). Ids are never reused (AUTOINCREMENT on
SQLite, as revision 0010 made every table whose ids leave the database).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=True),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tombstones")),
        sa.UniqueConstraint("kind", "subject_id", name=op.f("uq_tombstones_kind_subject_id")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_tombstones_recorded", "tombstones", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_tombstones_recorded", table_name="tombstones")
    op.drop_table("tombstones")
