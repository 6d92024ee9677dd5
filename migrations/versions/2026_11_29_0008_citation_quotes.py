"""A stored citation's supporting quote: the sentence(s) of its passage that support the
answer, shown with the answer when the session is read again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chat_citations") as batch:
        # Turns stored before this revision have no quote: "" (not NULL) reads the same.
        batch.add_column(sa.Column("quote", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("chat_citations") as batch:
        batch.drop_column("quote")
