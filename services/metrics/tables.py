"""The metrics service's tables: the transition facts every BI query reads, and their daily rollup."""

from datetime import date, datetime
from uuid import UUID

from sqlalchemy import DateTime, Index, text
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
        # The few re-entries (a lead entering a stage again), which the funnel counts from the facts.
        Index(
            "ix_metrics_stage_transition_reentry_occurred_at",
            "occurred_at",
            postgresql_where=text("NOT first_entry"),
            sqlite_where=text("NOT first_entry"),
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
    # Derived from the lead's other facts (rollup.derive), kept current as facts arrive in any order:
    # whether no fact of the lead entered `to_stage` before this one (by occurred_at, then event_id),
    # and the lead's earliest entry into each later funnel stage at or after this fact's occurred_at.
    first_entry: bool = False
    next_lead_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    next_mql_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    next_sal_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    next_sql_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    next_opportunity_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    next_customer_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class FunnelDayRow(MetricsTable, table=True):
    """The facts of one UTC day, stage, campaign and origin system, summed for the funnel's long windows.

    `leads` counts the lead's first entries into the stage (`first_entry`); `to_<stage>` those of them
    that entered the later stage at some point since. Maintained with the facts in one transaction.
    """

    __tablename__ = "metrics_funnel_day"

    day: date = Field(primary_key=True)
    stage: str = Field(primary_key=True, max_length=32)
    campaign: str = Field(primary_key=True, max_length=255)  # '' when the facts have none
    origin_system: str = Field(primary_key=True, max_length=32)  # '' when the facts have none
    entries: int = 0
    leads: int = 0
    to_lead: int = 0
    to_mql: int = 0
    to_sal: int = 0
    to_sql: int = 0
    to_opportunity: int = 0
    to_customer: int = 0


class LeadStageRow(MetricsTable, table=True):
    """Each lead's current stage: the stage of its latest fact (by occurred_at, recorded_at, event_id).

    Kept with the facts in one transaction; what `onefunnel_leads_in_stage` and the SLA checks read.
    """

    __tablename__ = "metrics_lead_stage"
    __table_args__ = (Index("ix_metrics_lead_stage_stage_entered_at", "stage", "entered_at"),)

    lead_id: UUID = Field(primary_key=True)
    stage: str = Field(max_length=32)
    entered_at: datetime = Field(sa_type=DateTime(timezone=True))
    recorded_at: datetime = Field(sa_type=DateTime(timezone=True))
    event_id: UUID  # of that fact


class SlaBreachRow(MetricsTable, table=True):
    """A lead that stayed in a stage longer than the funnel's SLA allows; stored once per stay."""

    __tablename__ = "metrics_sla_breach"

    lead_id: UUID = Field(primary_key=True)
    stage: str = Field(primary_key=True, max_length=32)
    entered_at: datetime = Field(primary_key=True, sa_type=DateTime(timezone=True))
    detected_at: datetime = Field(sa_type=DateTime(timezone=True))
