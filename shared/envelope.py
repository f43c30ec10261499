"""CloudEvents 1.0 in Kafka binary content mode: `ce_*` headers, the event as a JSON body.

See the CloudEvents Kafka protocol binding: attributes travel as `ce_<name>` headers, the
content type as `content-type`, and the message key carries the partitioning key.
"""

from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from onefunnel.shared.bus import Message, OutgoingMessage
from onefunnel.shared.events import Lead, LeadStageChanged, SourceEvent

Event = SourceEvent | LeadStageChanged | Lead

EVENT_TYPES: Final[dict[type[Event], str]] = {
    SourceEvent: "io.onefunnel.source.event_received.v1",
    LeadStageChanged: "io.onefunnel.lead.stage_changed.v1",
    Lead: "io.onefunnel.lead.updated.v1",
}
_MODELS: Final[dict[str, type[Event]]] = {name: model for model, name in EVENT_TYPES.items()}
_TYPE_HEADERS: Final[dict[type[Event], bytes]] = {model: name.encode() for model, name in EVENT_TYPES.items()}
_JSON: Final[dict[type[Event], TypeAdapter[Any]]] = {model: TypeAdapter(model) for model in EVENT_TYPES}


class EnvelopeError(ValueError):
    """A message that is not a CloudEvent we understand; it belongs on the dead-letter topic."""


def encode(event: Event, *, source: str) -> OutgoingMessage:
    """Wrap an event for the bus; `source` is the CloudEvents source, e.g. `/onefunnel/ingest`."""
    time = event.updated_at if isinstance(event, Lead) else event.occurred_at
    key = event.key.encode()
    headers = (
        ("ce_specversion", b"1.0"),
        ("ce_id", str(event.id).encode()),
        ("ce_source", source.encode()),
        ("ce_type", _TYPE_HEADERS[type(event)]),
        ("ce_time", time.isoformat().replace("+00:00", "Z").encode()),
        ("ce_subject", key),
        ("content-type", b"application/json"),
    )
    # The same bytes as `model_dump_json().encode()`, without decoding them to a str and back.
    return OutgoingMessage(key=key, value=_JSON[type(event)].dump_json(event), headers=headers)


def decode(message: Message) -> Event:
    """Read a CloudEvent back into its model, or raise EnvelopeError saying why not."""
    if message.header("ce_specversion") != b"1.0":
        raise EnvelopeError("not a CloudEvents 1.0 message (ce_specversion missing or not 1.0)")
    event_type = (message.header("ce_type") or b"").decode(errors="replace")
    model = _MODELS.get(event_type)
    if model is None:
        raise EnvelopeError(f"unknown event type {event_type!r}")
    try:
        return model.model_validate_json(message.value)
    except ValidationError as error:
        raise EnvelopeError(
            f"{event_type} body does not match the schema: {error.error_count()} errors"
        ) from error
