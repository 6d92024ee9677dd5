"""Tenant-key rotation: the generation new data is sealed under, and the retired key that
still opens older objects until the background re-encryption has finished (app/crypto).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tenant_keys",
        sa.Column("generation", sa.Integer(), server_default="1", nullable=False),
    )
    op.add_column("tenant_keys", sa.Column("retired_key", sa.LargeBinary(), nullable=True))
    op.add_column("tenant_keys", sa.Column("retired_generation", sa.Integer(), nullable=True))
    op.add_column(
        "tenant_keys",
        sa.Column("rotated_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("tenant_keys") as batch:
        batch.drop_column("rotated_at")
        batch.drop_column("retired_generation")
        batch.drop_column("retired_key")
        batch.drop_column("generation")
