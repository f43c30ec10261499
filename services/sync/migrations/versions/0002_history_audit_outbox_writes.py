"""Lead history, audit trail, outbox, write-back queue, expected echoes and parked events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _moment(name: str, *, nullable: bool = False) -> "sa.Column[object]":
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("sync_lead") as lead:
        lead.add_column(sa.Column("email", sa.String(length=320), nullable=True))
        lead.add_column(sa.Column("score", sa.Float(), nullable=True))
        lead.add_column(sa.Column("merged_into", sa.Uuid(), nullable=True))
        lead.add_column(_moment("deleted_at", nullable=True))
        lead.create_unique_constraint("uq_sync_lead_email", ["email"])
    with op.batch_alter_table("sync_lead_link") as link:
        link.add_column(sa.Column("stage_raw", sa.String(length=255), nullable=True))
    op.create_table(
        "sync_stage_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("lead_id", sa.Uuid(), sa.ForeignKey("sync_lead.id"), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=True),
        sa.Column("raw", sa.String(length=255), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        _moment("occurred_at"),
        sa.UniqueConstraint("event_id", name="uq_sync_stage_event_event_id"),
    )
    op.create_index("ix_sync_stage_event_lead_id", "sync_stage_event", ["lead_id"])
    op.create_table(
        "sync_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=True),
        sa.Column("to_stage", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        _moment("occurred_at"),
        _moment("recorded_at"),
    )
    op.create_index("ix_sync_audit_lead_id", "sync_audit", ["lead_id"])
    op.create_table(
        "sync_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _moment("created_at"),
        _moment("published_at", nullable=True),
        sa.UniqueConstraint("event_id", name="uq_sync_outbox_event_id"),
    )
    op.create_index("ix_sync_outbox_unpublished", "sync_outbox", ["published_at", "id"])
    op.create_table(
        "sync_write",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("backward", sa.Boolean(), nullable=False),
        sa.Column("create", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _moment("next_attempt_at"),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("cause_event_id", sa.Uuid(), nullable=False),
        _moment("occurred_at"),
        _moment("created_at"),
        _moment("finished_at", nullable=True),
    )
    op.create_index("ix_sync_write_due", "sync_write", ["status", "system", "next_attempt_at"])
    op.create_index("ix_sync_write_lead_id", "sync_write", ["lead_id"])
    op.create_table(
        "sync_expected_echo",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        _moment("created_at"),
    )
    op.create_index("ix_sync_expected_echo_lead_id", "sync_expected_echo", ["lead_id"])
    op.create_table(
        "sync_parked_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _moment("parked_at"),
        sa.UniqueConstraint("event_id", name="uq_sync_parked_event_event_id"),
    )
    op.create_index("ix_sync_parked_event_record", "sync_parked_event", ["system", "record_id"])


def downgrade() -> None:
    for table in (
        "sync_parked_event",
        "sync_expected_echo",
        "sync_write",
        "sync_outbox",
        "sync_audit",
        "sync_stage_event",
    ):
        op.drop_table(table)
    with op.batch_alter_table("sync_lead_link") as link:
        link.drop_column("stage_raw")
    with op.batch_alter_table("sync_lead") as lead:
        lead.drop_constraint("uq_sync_lead_email", type_="unique")
        for column in ("deleted_at", "merged_into", "score", "email"):
            lead.drop_column(column)
