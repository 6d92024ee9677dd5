"""Erasure: deletion receipts, periodic task runs, a job's subject, per-tenant retention.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deletion_receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=True),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("name_digest", sa.String(length=64), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("requested_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("removed", sa.Text(), nullable=False),
        sa.Column("verification", sa.Text(), nullable=False),
        sa.Column("receipt_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deletion_receipts")),
    )
    op.create_index(
        "ix_deletion_receipts_tenant", "deletion_receipts", ["tenant_id", "requested_at"]
    )
    op.create_index(
        "ix_deletion_receipts_subject", "deletion_receipts", ["subject_type", "subject_id"]
    )
    op.create_table(
        "periodic_runs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_run_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_periodic_runs")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("subject_id", sa.Integer(), nullable=True))
        batch.create_index("ix_jobs_kind_subject", ["kind", "subject_id"])
        # Periodic work belongs to no tenant.
        batch.alter_column("tenant_id", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("retention_days")
    op.execute("DELETE FROM jobs WHERE tenant_id IS NULL")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("tenant_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_index("ix_jobs_kind_subject")
        batch.drop_column("subject_id")
    op.drop_table("periodic_runs")
    op.drop_index("ix_deletion_receipts_subject", table_name="deletion_receipts")
    op.drop_index("ix_deletion_receipts_tenant", table_name="deletion_receipts")
    op.drop_table("deletion_receipts")
