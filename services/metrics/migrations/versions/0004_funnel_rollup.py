"""The funnel's derived columns on each fact and its daily rollup, filled from the facts already stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FACTS = "metrics_stage_transition"
_ROLLUP = "metrics_funnel_day"
_REENTRY_INDEX = "ix_metrics_stage_transition_reentry_occurred_at"
# The funnel stages after the first, as in onefunnel.shared.stages.FUNNEL when this was written.
_LATER = ("lead", "mql", "sal", "sql", "opportunity", "customer")


def upgrade() -> None:
    op.add_column(_FACTS, sa.Column("first_entry", sa.Boolean(), nullable=False, server_default=sa.false()))
    for stage in _LATER:
        op.add_column(_FACTS, sa.Column(f"next_{stage}_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        _REENTRY_INDEX,
        _FACTS,
        ["occurred_at"],
        postgresql_where=sa.text("NOT first_entry"),
        sqlite_where=sa.text("NOT first_entry"),
    )
    op.create_table(
        _ROLLUP,
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("campaign", sa.String(length=255), nullable=False),
        sa.Column("origin_system", sa.String(length=32), nullable=False),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("entries", "leads", *(f"to_{stage}" for stage in _LATER))
        ),
        sa.PrimaryKeyConstraint("day", "stage", "campaign", "origin_system"),
    )
    _fill()


def _fill() -> None:
    """Derive every stored fact's columns (as rollup.derive does) and sum them into the rollup."""
    # Only this module's constants are formatted into the SQL below.
    assignments = ", ".join(f"next_{s}_at = derived.next_{s}_at" for s in _LATER)
    nexts = ", ".join(
        f"min(occurred_at) FILTER (WHERE to_stage = '{stage}') OVER later AS next_{stage}_at"
        for stage in _LATER
    )
    op.execute(
        f"""
        UPDATE {_FACTS}
        SET first_entry = derived.first_entry, {assignments}
        FROM (
            SELECT event_id,
                   row_number() OVER (PARTITION BY lead_id, to_stage ORDER BY occurred_at, event_id) = 1
                       AS first_entry,
                   {nexts}
            FROM {_FACTS}
            WINDOW later AS (
                PARTITION BY lead_id ORDER BY occurred_at DESC
                RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            )
        ) AS derived
        WHERE {_FACTS}.event_id = derived.event_id
        """  # noqa: S608
    )
    if op.get_bind().dialect.name == "postgresql":
        day = "CAST(occurred_at AT TIME ZONE 'UTC' AS DATE)"
    else:  # SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS.ffffff' and dates as 'YYYY-MM-DD'
        day = "substr(occurred_at, 1, 10)"
    conversions = ", ".join(
        f"sum(CASE WHEN first_entry AND next_{stage}_at IS NOT NULL THEN 1 ELSE 0 END)" for stage in _LATER
    )
    op.execute(
        f"""
        INSERT INTO {_ROLLUP}
            (day, stage, campaign, origin_system, entries, leads, {", ".join(f"to_{s}" for s in _LATER)})
        SELECT {day}, to_stage, coalesce(campaign, ''), coalesce(origin_system, ''), count(*),
               sum(CASE WHEN first_entry THEN 1 ELSE 0 END), {conversions}
        FROM {_FACTS}
        GROUP BY {day}, to_stage, coalesce(campaign, ''), coalesce(origin_system, '')
        """  # noqa: S608
    )


def downgrade() -> None:
    op.drop_table(_ROLLUP)
    op.drop_index(_REENTRY_INDEX, table_name=_FACTS)
    for stage in reversed(_LATER):
        op.drop_column(_FACTS, f"next_{stage}_at")
    op.drop_column(_FACTS, "first_entry")
