"""A stored answer's faithfulness check: whether it was given as grounded, the check's outcome
and the note given with it, so that a session read again tells a quoted or flagged answer from
a grounded one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        # NULL for questions, and for answers stored before this revision: nobody recorded
        # what the check made of them, and guessing "unchecked" would be a claim.
        batch.add_column(sa.Column("grounded", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("check_outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("note")
        batch.drop_column("check_outcome")
        batch.drop_column("grounded")
