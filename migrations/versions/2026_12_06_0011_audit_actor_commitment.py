"""Sealed audit entries: a keyed seal over each entry's hash and its actor's state.

`audit_entries.seal` is HMAC(audit secret, "seal:entry:" + entry_hash), or "seal:erased:" once
an erasure blanked the actor (app/audit/chain.py); the hashed content of a sealed entry also
holds "sealed": true. A database writer, who does not hold the secret, can then neither rewrite
an entry (recomputing the public hashes) nor blank its actor columns and pass that off as an
erasure.

Entries already stored stay NULL: this revision cannot seal them (the secret is not the
database's to know), and sealing them later would bless whatever was done to them before.
They verify as before, by hash, commitment and checkpoints; they may only precede the chain's
first sealed entry; and one whose actor is blank passes only while no account and no readable
entry carries its commitment (its person is gone, as an erasure leaves it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept when SQLite's batch mode rebuilds the table (revision 0010 made its ids never reused).
_TABLE_KWARGS = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("audit_entries", table_kwargs=_TABLE_KWARGS) as batch:
        batch.add_column(sa.Column("seal", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_entries", table_kwargs=_TABLE_KWARGS) as batch:
        batch.drop_column("seal")
