"""A stored citation's highlighted words: the answer's words as its quote writes them, which
the chat page marks in the quote when the session is read again.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chat_citations") as batch:
        # A JSON list; turns stored before this revision have none: "[]" (not NULL).
        batch.add_column(sa.Column("highlight", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("chat_citations") as batch:
        batch.drop_column("highlight")
