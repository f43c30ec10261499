"""The wire schema: what services tell each other through the bus.

Version 1. Evolution is additive only: new optional fields may appear in a later version,
existing fields never change meaning or type, and a reader ignores fields it does not know.
The JSON Schema of every model here is generated into `shared/schemas/` (`onefunnel schemas`)
and a test fails when the committed files and these models drift apart.

The models are msgspec structs: ingest builds and encodes one per platform event, and msgspec does
both for a fraction of what pydantic cost there (docs/benchmarks.md). msgspec checks types and
`Meta` constraints when it decodes; `__post_init__` also runs when code builds an event, so the
checks that guard what a consumer will accept (aware UTC times, non-empty ids) run on both paths.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal, TypeVar
from uuid import UUID

import msgspec

from onefunnel.shared.stages import Stage

SCHEMA_VERSION = 1

UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timezone-aware instant, normalized to UTC by the model holding it; naive datetimes are rejected."""
RecordId = Annotated[str, msgspec.Meta(min_length=1)]


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


class _Wire(msgspec.Struct, frozen=True):
    """Unknown fields are ignored when decoding (msgspec's default), as the evolution rule needs.

    Each model repeats `frozen` (for type checkers) and sets `kw_only` (not inherited), so required
    fields may follow defaulted ones.
    """


def _check_times(model: _Wire, *names: str) -> None:
    """Refuse naive datetimes and store the others in UTC."""
    for name in names:
        value: datetime = getattr(model, name)
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(f"{name}: a datetime without a timezone")
        if offset or value.tzinfo is not UTC:
            msgspec.structs.force_setattr(model, name, value.astimezone(UTC))


def _check_ids(model: _Wire, *names: str) -> None:
    for name in names:
        if not getattr(model, name):
            raise ValueError(f"{name}: an empty id")


def _describe(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Changes(_Wire, frozen=True, kw_only=True):
    """The fields an event reported, in canonical names.

    A field is null when the event did not report it. A value the platform cleared is the
    empty string in its raw field (`stage_raw`, `status`, ...), and `stage` is then null.
    """

    stage: Annotated[
        Stage | None, _describe("Canonical stage the platform value maps to, if it maps to one.")
    ] = None
    stage_raw: Annotated[str | None, _describe("The platform's own stage value, exactly as sent.")] = None
    status: Annotated[str | None, _describe("Lead status, in the platform's own values.")] = None
    score: Annotated[float | None, _describe("Lead score as the platform computes it.")] = None
    owner_id: Annotated[str | None, _describe("The platform's id of the record owner.")] = None
    email: Annotated[str | None, _describe("Email address; personal data, never logged.")] = None
    campaign: Annotated[str | None, _describe("Campaign or program the change came from.")] = None
    lead_source: Annotated[str | None, _describe("Original source of the lead.")] = None


class RecordLink(_Wire, frozen=True, kw_only=True):
    """One platform record that is this lead."""

    system: SourceSystem
    object_type: ObjectType
    record_id: RecordId

    def __post_init__(self) -> None:
        _check_ids(self, "record_id")


class SourceEvent(_Wire, frozen=True, kw_only=True):
    """What a platform told us about one record, normalized. Published by ingest."""

    schema_version: Literal[1] = 1
    id: Annotated[UUID, _describe("Our id for this event, unique per normalized event.")]
    idempotency_key: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=512,
            description="Stable key derived from the platform's own event id (or a hash of the delivery "
            "where the platform has none); the same platform event always gets the same key.",
        ),
    ]
    source: SourceSystem
    account_id: Annotated[
        str | None, _describe("The tenant inside the platform: HubSpot portal, Salesforce org, ...")
    ] = None
    object_type: ObjectType
    object_id: Annotated[
        str, msgspec.Meta(min_length=1, description="The platform's record id (for a merge, the winner).")
    ]
    event_type: SourceEventType
    changes: Changes = msgspec.field(default_factory=Changes)
    merged_object_ids: Annotated[
        list[str], _describe("For a merge: the record ids folded into `object_id`.")
    ] = msgspec.field(default_factory=list)
    related: Annotated[
        list[RecordLink],
        _describe(
            "Other records of the same person in the same system, e.g. the contact and "
            "opportunity a converted Salesforce lead became."
        ),
    ] = msgspec.field(default_factory=list)
    change_source: Annotated[
        str | None,
        _describe(
            "The platform's marker of who made the change (HubSpot changeSource, Pipedrive "
            "change_source, ...), used to recognise echoes of our own writes."
        ),
    ] = None
    occurred_at: Annotated[UtcDatetime, _describe("When the change happened, as the platform reports it.")]
    received_at: Annotated[UtcDatetime, _describe("When ingest received the delivery.")]

    def __post_init__(self) -> None:
        _check_ids(self, "object_id")
        if not 0 < len(self.idempotency_key) <= 512:
            raise ValueError("idempotency_key: not 1 to 512 characters")
        _check_times(self, "occurred_at", "received_at")

    @property
    def key(self) -> str:
        """Bus message key: one record's events stay in order within a partition."""
        return f"{self.source}:{self.object_type}:{self.object_id}"


class Cause(_Wire, frozen=True, kw_only=True):
    """Which platform event made a lead change stage, and why."""

    system: SourceSystem
    source_event_id: UUID
    event_type: SourceEventType
    reason: Annotated[str | None, _describe("Why, for backward moves (recycle, disqualify).")] = None


class Attribution(_Wire, frozen=True, kw_only=True):
    campaign: str | None = None
    lead_source: str | None = None
    origin_system: Annotated[SourceSystem | None, _describe("The system the lead was first seen in.")] = None


class LeadStageChanged(_Wire, frozen=True, kw_only=True):
    """A lead moved from one canonical stage to another. Published by sync, counted by metrics."""

    schema_version: Literal[1] = 1
    id: Annotated[UUID, _describe("Unique per transition; consumers deduplicate on it.")]
    lead_id: UUID
    from_stage: Annotated[Stage | None, _describe("Null when the lead enters the funnel.")]
    to_stage: Stage
    occurred_at: Annotated[UtcDatetime, _describe("When the change happened in the source system.")]
    recorded_at: Annotated[UtcDatetime, _describe("When sync applied it.")]
    cause: Cause
    attribution: Attribution = msgspec.field(default_factory=Attribution)
    owner_id: str | None = None

    def __post_init__(self) -> None:
        _check_times(self, "occurred_at", "recorded_at")

    @property
    def key(self) -> str:
        return str(self.lead_id)


class Lead(_Wire, frozen=True, kw_only=True):
    """The canonical lead: one person in the funnel, linked to each system's record."""

    schema_version: Literal[1] = 1
    id: UUID
    stage: Stage | None
    version: Annotated[int, msgspec.Meta(ge=0, description="Increases by one with every applied change.")]
    links: list[RecordLink] = msgspec.field(default_factory=list)
    attribution: Attribution = msgspec.field(default_factory=Attribution)
    owner_id: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime

    def __post_init__(self) -> None:
        if self.version < 0:
            raise ValueError("version: negative")
        _check_times(self, "created_at", "updated_at")

    @property
    def key(self) -> str:
        return str(self.id)


Model = TypeVar("Model", bound=_Wire)
_ENCODER: Final = msgspec.json.Encoder()


def to_json(model: _Wire) -> bytes:
    """The model's JSON: every field, nulls and defaults included."""
    return _ENCODER.encode(model)


def from_json(data: bytes | str, model: type[Model]) -> Model:
    """Decode and check JSON as `model`; raises msgspec.ValidationError (a ValueError) saying where."""
    return msgspec.json.decode(data, type=model)
