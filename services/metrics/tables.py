"""The metrics service's tables: the transition facts every BI query reads."""

from datetime import datetime
from uuid import UUID

from sqlalchemy import DateTime, Index
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class MetricsTable(SQLModel, registry=registry()):
    """Base of this service's tables, on a metadata of its own (migrated on its own)."""


metadata = MetricsTable.metadata


class TransitionRow(MetricsTable, table=True):
    """One `LeadStageChanged`, stored once (its event id is the key)."""

    __tablename__ = "metrics_stage_transition"
    __table_args__ = (
        Index("ix_metrics_stage_transition_to_stage_occurred_at", "to_stage", "occurred_at"),
        Index("ix_metrics_stage_transition_campaign_occurred_at", "campaign", "occurred_at"),
        Index("ix_metrics_stage_transition_lead_id_occurred_at", "lead_id", "occurred_at"),
        # A window's facts as an index-only range read (funnel, export), whatever the filters.
        Index(
            "ix_metrics_stage_transition_occurred_at_lead_id_to_stage", "occurred_at", "lead_id", "to_stage"
        ),
    )

    event_id: UUID = Field(primary_key=True)
    lead_id: UUID
    from_stage: str | None = Field(default=None, max_length=32)
    to_stage: str = Field(max_length=32)
    occurred_at: datetime = Field(sa_type=DateTime(timezone=True))
    recorded_at: datetime = Field(sa_type=DateTime(timezone=True))
    cause_system: str = Field(max_length=32)
    campaign: str | None = Field(default=None, max_length=255)
    lead_source: str | None = Field(default=None, max_length=255)
    origin_system: str | None = Field(default=None, max_length=32)
    owner_id: str | None = Field(default=None, max_length=255)


class SlaBreachRow(MetricsTable, table=True):
    """A lead that stayed in a stage longer than the funnel's SLA allows; stored once per stay."""

    __tablename__ = "metrics_sla_breach"

    lead_id: UUID = Field(primary_key=True)
    stage: str = Field(primary_key=True, max_length=32)
    entered_at: datetime = Field(primary_key=True, sa_type=DateTime(timezone=True))
    detected_at: datetime = Field(sa_type=DateTime(timezone=True))
