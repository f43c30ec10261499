"""Each lead's current stage, filled from the facts already stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "metrics_lead_stage"
_INDEX = "ix_metrics_lead_stage_stage_entered_at"


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("lead_id"),
    )
    op.create_index(_INDEX, _TABLE, ["stage", "entered_at"])
    # Each lead's latest fact, by occurred_at, recorded_at, event_id (as facts.record orders them).
    op.execute(
        """
        INSERT INTO metrics_lead_stage (lead_id, stage, entered_at, recorded_at, event_id)
        SELECT lead_id, to_stage, occurred_at, recorded_at, event_id
        FROM (
            SELECT lead_id, to_stage, occurred_at, recorded_at, event_id,
                   row_number() OVER (
                       PARTITION BY lead_id ORDER BY occurred_at DESC, recorded_at DESC, event_id DESC
                   ) AS latest
            FROM metrics_stage_transition
        ) AS ordered
        WHERE latest = 1
        """
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
    op.drop_table(_TABLE)
