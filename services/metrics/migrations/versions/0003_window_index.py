"""An index for reading one time window's facts (the BI API's funnel and export).

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

_NAME = "ix_metrics_stage_transition_occurred_at_lead_id_to_stage"


def upgrade() -> None:
    op.create_index(_NAME, "metrics_stage_transition", ["occurred_at", "lead_id", "to_stage"])


def downgrade() -> None:
    op.drop_index(_NAME, table_name="metrics_stage_transition")
