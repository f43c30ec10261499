"""Leads, their links to platform records, and the inbox of processed events.

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


def upgrade() -> None:
    op.create_table(
        "sync_lead",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(length=255), nullable=True),
        sa.Column("campaign", sa.String(length=255), nullable=True),
        sa.Column("lead_source", sa.String(length=255), nullable=True),
        sa.Column("origin_system", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "sync_lead_link",
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["sync_lead.id"]),
        sa.PrimaryKeyConstraint("system", "record_id"),
    )
    op.create_index("ix_sync_lead_link_lead_id", "sync_lead_link", ["lead_id"])
    op.create_table(
        "sync_inbox",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=512), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "idempotency_key"),
    )


def downgrade() -> None:
    op.drop_table("sync_inbox")
    op.drop_index("ix_sync_lead_link_lead_id", table_name="sync_lead_link")
    op.drop_table("sync_lead_link")
    op.drop_table("sync_lead")
