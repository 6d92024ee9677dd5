"""Indexes for search visibility: a tenant's soft-deleted and per-sensitivity documents.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_documents_tenant_deleted", "documents", ["tenant_id", "deleted_at"])
    op.create_index("ix_documents_tenant_sensitivity", "documents", ["tenant_id", "sensitivity"])


def downgrade() -> None:
    op.drop_index("ix_documents_tenant_sensitivity", table_name="documents")
    op.drop_index("ix_documents_tenant_deleted", table_name="documents")
