"""Curation: jobs with a payload and progress (a re-parse), chunks that are disabled, written by a person, or staged by a re-parse, and each
knowledge base's own chunking and retrieval settings.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HIDDEN_SQL = "NOT enabled OR staged"


def upgrade() -> None:
    op.add_column(
        "chunks", sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False)
    )
    op.add_column(
        "chunks",
        sa.Column("origin", sa.String(length=16), server_default="parsed", nullable=False),
    )
    op.add_column(
        "chunks", sa.Column("staged", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.create_index(
        "ix_chunks_hidden",
        "chunks",
        ["tenant_id"],
        sqlite_where=sa.text(HIDDEN_SQL),
        postgresql_where=sa.text(HIDDEN_SQL),
    )
    op.add_column("jobs", sa.Column("payload", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("done", sa.Integer(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("total", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "tenant_settings",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("chunking", sa.Text(), server_default="{}", nullable=False),
        sa.Column("retrieval", sa.Text(), server_default="{}", nullable=False),
        sa.Column("updated_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_settings_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_settings")),
    )


def downgrade() -> None:
    op.drop_table("tenant_settings")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("total")
        batch.drop_column("done")
        batch.drop_column("payload")
    op.drop_index("ix_chunks_hidden", table_name="chunks")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("staged")
        batch.drop_column("origin")
        batch.drop_column("enabled")
