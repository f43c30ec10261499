"""Write-backs that delete a record (the propagate delete policy).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_write") as write:
        write.add_column(sa.Column("delete", sa.Boolean(), nullable=False, server_default=sa.false()))
        write.add_column(sa.Column("record_id", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_write") as write:
        write.drop_column("record_id")
        write.drop_column("delete")
