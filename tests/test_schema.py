"""The shared schema is the contract: committed JSON Schema, version-1 examples, CloudEvents envelope."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import jsonschema
import msgspec
import pytest

from onefunnel.shared import envelope, schema_files
from onefunnel.shared.bus import Message
from onefunnel.shared.events import Lead, LeadStageChanged, SourceEvent, from_json
from onefunnel.shared.stages import FUNNEL, Stage

EXAMPLES = Path(schema_files.SCHEMA_DIR) / "examples"
MODELS: dict[str, type[SourceEvent | LeadStageChanged | Lead]] = {
    "source_event": SourceEvent,
    "lead_stage_changed": LeadStageChanged,
    "lead": Lead,
}


def test_committed_json_schemas_match_the_models() -> None:
    rendered = schema_files.render()
    committed = {p.name: p.read_text() for p in schema_files.SCHEMA_DIR.glob("*.schema.json")}
    assert committed == rendered, "schemas drifted from the models: run `make schemas` and commit the result"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_version_1_examples_parse_and_validate_against_the_committed_schema(name: str) -> None:
    document = json.loads((EXAMPLES / f"{name}.v1.json").read_text())
    schema = json.loads((schema_files.SCHEMA_DIR / f"{name}.v1.schema.json").read_text())

    jsonschema.validate(document, schema)
    model = from_json(json.dumps(document), MODELS[name])

    assert model.schema_version == 1


def test_a_naive_timestamp_is_rejected_and_an_offset_is_normalized_to_utc() -> None:
    document = json.loads((EXAMPLES / "source_event.v1.json").read_text())
    with pytest.raises(msgspec.ValidationError, match="timezone"):
        from_json(json.dumps({**document, "occurred_at": "2026-11-20T14:02:11"}), SourceEvent)

    event = from_json(json.dumps({**document, "occurred_at": "2026-11-20T16:02:11+02:00"}), SourceEvent)

    assert event.occurred_at == datetime(2026, 11, 20, 14, 2, 11, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_unknown_fields_from_a_newer_minor_writer_are_ignored() -> None:
    document = json.loads((EXAMPLES / "lead_stage_changed.v1.json").read_text())

    event = from_json(json.dumps({**document, "added_later": {"x": 1}}), LeadStageChanged)

    assert event.to_stage is Stage.SAL


def test_funnel_stages_are_ordered_and_side_states_rank_below_them() -> None:
    assert [s.rank for s in FUNNEL] == list(range(len(FUNNEL)))
    assert Stage.NURTURE.is_side_state and Stage.DISQUALIFIED.rank < Stage.SUBSCRIBER.rank


def _stage_change() -> LeadStageChanged:
    document = json.loads((EXAMPLES / "lead_stage_changed.v1.json").read_text())
    return from_json(json.dumps({**document, "id": str(uuid4())}), LeadStageChanged)


def test_an_event_travels_as_a_binary_mode_cloudevent_keyed_by_its_lead() -> None:
    event = _stage_change()

    outgoing = envelope.encode(event, source="/onefunnel/sync")
    headers = dict(outgoing.headers)

    assert outgoing.key == str(event.lead_id).encode()
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"io.onefunnel.lead.stage_changed.v1"
    assert headers["ce_id"] == str(event.id).encode()
    assert headers["ce_source"] == b"/onefunnel/sync"
    assert headers["ce_time"] == b"2026-11-20T14:02:11Z"
    assert headers["content-type"] == b"application/json"
    received = Message(
        topic="t", partition=0, offset=0, key=outgoing.key, value=outgoing.value, headers=outgoing.headers
    )
    assert envelope.decode(received) == event


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ce_specversion": b"0.3"}, "CloudEvents 1.0"),
        ({"ce_type": b"com.example.other"}, "unknown event type"),
        ({"body": b'{"schema_version": 1}'}, "does not match the schema"),
    ],
)
def test_a_message_that_is_not_our_cloudevent_is_refused_with_the_reason(
    change: dict[str, bytes], reason: str
) -> None:
    outgoing = envelope.encode(_stage_change(), source="/onefunnel/sync")
    headers = tuple((k, change.get(k, v)) for k, v in outgoing.headers)
    message = Message(
        topic="t",
        partition=0,
        offset=0,
        key=outgoing.key,
        value=change.get("body", outgoing.value),
        headers=headers,
    )

    with pytest.raises(envelope.EnvelopeError, match=reason):
        envelope.decode(message)


def test_a_source_event_key_keeps_one_record_in_one_partition() -> None:
    document = json.loads((EXAMPLES / "source_event.v1.json").read_text())
    event = from_json(json.dumps(document), SourceEvent)

    assert event.key == "hubspot:contact:1246965"
    assert (
        from_json(json.dumps({**document, "received_at": datetime.now(UTC).isoformat()}), SourceEvent).key
        == event.key
    )
