"""The wire schema: what services tell each other through the bus.

Version 1. Evolution is additive only: new optional fields may appear in a later version,
existing fields never change meaning or type, and a reader ignores fields it does not know.
The JSON Schema of every model here is generated into `shared/schemas/` (`onefunnel schemas`)
and a test fails when the committed files and these models drift apart.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from onefunnel.shared.stages import Stage

SCHEMA_VERSION = 1


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
"""A timezone-aware instant, normalized to UTC; naive datetimes are rejected."""


class SourceSystem(StrEnum):
    """A platform onefunnel receives events from and writes back to."""

    HUBSPOT = "hubspot"
    SALESFORCE = "salesforce"
    MARKETO = "marketo"
    MAUTIC = "mautic"
    PIPEDRIVE = "pipedrive"
    GENERIC = "generic"


class ObjectType(StrEnum):
    """The kind of platform record an event is about, in the platform's own noun."""

    CONTACT = "contact"
    LEAD = "lead"
    PERSON = "person"
    DEAL = "deal"
    OPPORTUNITY = "opportunity"


class SourceEventType(StrEnum):
    CREATED = "created"
    CHANGED = "changed"
    MERGED = "merged"
    DELETED = "deleted"
    RESTORED = "restored"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)


class Changes(_Wire):
    """The fields an event reported, in canonical names.

    A field is null when the event did not report it. A value the platform cleared is the
    empty string in its raw field (`stage_raw`, `status`, ...), and `stage` is then null.
    """

    stage: Stage | None = Field(
        default=None, description="Canonical stage the platform value maps to, if it maps to one."
    )
    stage_raw: str | None = Field(
        default=None, description="The platform's own stage value, exactly as sent."
    )
    status: str | None = Field(default=None, description="Lead status, in the platform's own values.")
    score: float | None = Field(default=None, description="Lead score as the platform computes it.")
    owner_id: str | None = Field(default=None, description="The platform's id of the record owner.")
    email: str | None = Field(default=None, description="Email address; personal data, never logged.")
    campaign: str | None = Field(default=None, description="Campaign or program the change came from.")
    lead_source: str | None = Field(default=None, description="Original source of the lead.")


class RecordLink(_Wire):
    """One platform record that is this lead."""

    system: SourceSystem
    object_type: ObjectType
    record_id: str = Field(min_length=1)


class SourceEvent(_Wire):
    """What a platform told us about one record, normalized. Published by ingest."""

    schema_version: Literal[1] = 1
    id: UUID = Field(description="Our id for this event, unique per normalized event.")
    idempotency_key: str = Field(
        min_length=1,
        max_length=512,
        description="Stable key derived from the platform's own event id (or a hash of the delivery "
        "where the platform has none); the same platform event always gets the same key.",
    )
    source: SourceSystem
    account_id: str | None = Field(
        default=None, description="The tenant inside the platform: HubSpot portal, Salesforce org, ..."
    )
    object_type: ObjectType
    object_id: str = Field(min_length=1, description="The platform's record id (for a merge, the winner).")
    event_type: SourceEventType
    changes: Changes = Field(default_factory=Changes)
    merged_object_ids: list[str] = Field(
        default_factory=list, description="For a merge: the record ids folded into `object_id`."
    )
    related: list[RecordLink] = Field(
        default_factory=list,
        description="Other records of the same person in the same system, e.g. the contact and "
        "opportunity a converted Salesforce lead became.",
    )
    change_source: str | None = Field(
        default=None,
        description="The platform's marker of who made the change (HubSpot changeSource, Pipedrive "
        "change_source, ...), used to recognise echoes of our own writes.",
    )
    occurred_at: UtcDatetime = Field(description="When the change happened, as the platform reports it.")
    received_at: UtcDatetime = Field(description="When ingest received the delivery.")

    @property
    def key(self) -> str:
        """Bus message key: one record's events stay in order within a partition."""
        return f"{self.source}:{self.object_type}:{self.object_id}"


class Cause(_Wire):
    """Which platform event made a lead change stage, and why."""

    system: SourceSystem
    source_event_id: UUID
    event_type: SourceEventType
    reason: str | None = Field(default=None, description="Why, for backward moves (recycle, disqualify).")


class Attribution(_Wire):
    campaign: str | None = None
    lead_source: str | None = None
    origin_system: SourceSystem | None = Field(
        default=None, description="The system the lead was first seen in."
    )


class LeadStageChanged(_Wire):
    """A lead moved from one canonical stage to another. Published by sync, counted by metrics."""

    schema_version: Literal[1] = 1
    id: UUID = Field(description="Unique per transition; consumers deduplicate on it.")
    lead_id: UUID
    from_stage: Stage | None = Field(description="Null when the lead enters the funnel.")
    to_stage: Stage
    occurred_at: UtcDatetime = Field(description="When the change happened in the source system.")
    recorded_at: UtcDatetime = Field(description="When sync applied it.")
    cause: Cause
    attribution: Attribution = Field(default_factory=Attribution)
    owner_id: str | None = None

    @property
    def key(self) -> str:
        return str(self.lead_id)


class Lead(_Wire):
    """The canonical lead: one person in the funnel, linked to each system's record."""

    schema_version: Literal[1] = 1
    id: UUID
    stage: Stage | None
    version: int = Field(ge=0, description="Increases by one with every applied change.")
    links: list[RecordLink] = Field(default_factory=list)
    attribution: Attribution = Field(default_factory=Attribution)
    owner_id: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @property
    def key(self) -> str:
        return str(self.id)
