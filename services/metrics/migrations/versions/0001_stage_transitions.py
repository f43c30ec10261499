"""Stage transition facts.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "metrics_stage_transition"
_INDEXES = {
    "ix_metrics_stage_transition_to_stage_occurred_at": ["to_stage", "occurred_at"],
    "ix_metrics_stage_transition_campaign_occurred_at": ["campaign", "occurred_at"],
    "ix_metrics_stage_transition_lead_id_occurred_at": ["lead_id", "occurred_at"],
}


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=True),
        sa.Column("to_stage", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause_system", sa.String(length=32), nullable=False),
        sa.Column("campaign", sa.String(length=255), nullable=True),
        sa.Column("lead_source", sa.String(length=255), nullable=True),
        sa.Column("origin_system", sa.String(length=32), nullable=True),
        sa.Column("owner_id", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, _TABLE, columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name=_TABLE)
    op.drop_table(_TABLE)
