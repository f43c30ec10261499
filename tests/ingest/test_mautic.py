import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from onefunnel.ingest.platforms.base import Delivery, InvalidPayload, Unauthorized, delivery_hash, event_id
from onefunnel.ingest.platforms.mautic import Mautic
from onefunnel.shared.events import Changes, ObjectType, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import load_stage_mapping
from onefunnel.shared.stages import Stage

# Byte-exact bodies with the signatures published beside them (platform-samples/README.md).
SAMPLES = (
    Path(__file__).resolve().parent / "samples" / "mautic"
)  # byte-exact copies of ../shared/platform-samples
SECRET = "mautic-test-secret"
SIGNATURES = {
    "lead_post_save_new.json": "xawPKZKjHb2RDD0Ed1IwkenCneOomB79UF3Bjh99NGk=",
    "lead_post_save_update.json": "LhqQjAb7eJs28ntTKyFnCYKdMdY34sIrXK7b8GvrMrE=",
    "lead_points_change.json": "2DzHov71hMTeg5yqplV6eh+YPhFG/lg4puqd448gVRs=",
    "lead_post_delete.json": "wjyhlloTUD3vPOd3PenYZ2V++OO75Oj1HHwcEYLw5xg=",
    "batched_queue_mode.json": "nrEIk+vwfLAe12Vz2uN+eL2o5n/rQAcEk1K7ZFyyF8E=",
}
RECEIVED_AT = datetime(2017, 6, 19, 9, 40, tzinfo=UTC)
MAPPING = load_stage_mapping()


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def delivery(body: bytes, *, signature: str | None = None) -> Delivery:
    headers = {"content-type": "application/json", "x-origin-base-url": "https://mautic.example.com"}
    if signature is not None:
        headers["webhook-signature"] = signature
    return Delivery(
        method="POST",
        url="https://ingest.example.com/webhooks/mautic",
        headers=headers,
        query={},
        body=body,
        received_at=RECEIVED_AT,
    )


def signed(payload: Any) -> Delivery:
    body = json.dumps(payload).encode()
    return delivery(body, signature=sign(body))


def sample_payload(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(sample(name))
    return payload


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_mautic_accepts_each_published_sample_with_its_signature(name: str) -> None:
    Mautic(secrets=[SECRET]).verify(delivery(sample(name), signature=SIGNATURES[name]))


def test_mautic_reproduces_the_vector_of_mautics_own_client_test() -> None:
    Mautic(secrets=["secret123"]).verify(
        delivery(b'["payload"]', signature="N8vMehOCvgQDRsllxP46+0rC/1n2SpQmlGFiGPjD3nY=")
    )


def test_mautic_rejects_a_sample_signed_with_another_secret() -> None:
    name = "lead_post_save_update.json"
    with pytest.raises(Unauthorized, match="does not match"):
        Mautic(secrets=["another-secret"]).verify(delivery(sample(name), signature=SIGNATURES[name]))


def test_mautic_rejects_a_sample_whose_body_was_changed_by_one_byte() -> None:
    name = "lead_points_change.json"
    tampered = sample(name).replace(b'"new_points":5', b'"new_points":9')
    with pytest.raises(Unauthorized, match="does not match"):
        Mautic(secrets=[SECRET]).verify(delivery(tampered, signature=SIGNATURES[name]))


def test_mautic_rejects_a_delivery_without_a_signature_header() -> None:
    with pytest.raises(Unauthorized, match="missing Webhook-Signature"):
        Mautic(secrets=[SECRET]).verify(delivery(sample("lead_post_delete.json")))


def test_mautic_rejects_everything_when_no_secret_is_configured() -> None:
    name = "lead_post_delete.json"
    with pytest.raises(Unauthorized, match="no Mautic webhook secret"):
        Mautic(secrets=[]).verify(delivery(sample(name), signature=SIGNATURES[name]))


def test_mautic_accepts_the_second_secret_during_a_rotation() -> None:
    name = "lead_post_save_new.json"
    Mautic(secrets=["the-new-secret", SECRET]).verify(delivery(sample(name), signature=SIGNATURES[name]))


def test_mautic_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="empty"):
        Mautic(secrets=[SECRET, ""])


def test_mautic_reads_a_new_contact_as_created() -> None:
    [event] = Mautic(secrets=[SECRET]).normalize(delivery(sample("lead_post_save_new.json")), MAPPING).events
    assert event.source is SourceSystem.MAUTIC
    assert event.object_type is ObjectType.CONTACT
    assert event.object_id == "52"
    assert event.event_type is SourceEventType.CREATED
    assert event.changes == Changes(score=0.0, owner_id="1", email="john@doe.name")
    assert event.occurred_at == datetime(2017, 6, 19, 9, 31, 18, tzinfo=UTC)
    assert event.received_at == RECEIVED_AT


def test_mautic_reads_a_contact_update_as_changed() -> None:
    [event] = (
        Mautic(secrets=[SECRET]).normalize(delivery(sample("lead_post_save_update.json")), MAPPING).events
    )
    assert (event.object_id, event.event_type) == ("52", SourceEventType.CHANGED)
    assert event.changes == Changes(score=0.0, owner_id="1", email="john@doe.name")
    assert event.occurred_at == datetime(2017, 6, 19, 9, 32, 24, tzinfo=UTC)


def test_mautic_takes_the_score_of_a_points_change_from_the_new_points() -> None:
    payload = sample_payload("lead_points_change.json")
    payload["mautic.lead_points_change"][0]["points"] = {"old_points": 5, "new_points": 12}
    [event] = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING).events
    assert event.event_type is SourceEventType.CHANGED
    assert event.changes.score == 12.0


def test_mautic_falls_back_to_the_contact_points_when_a_points_change_has_no_points_object() -> None:
    payload = sample_payload("lead_points_change.json")
    del payload["mautic.lead_points_change"][0]["points"]
    [event] = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING).events
    assert event.changes.score == 5.0


def test_mautic_reads_the_points_change_sample() -> None:
    [event] = Mautic(secrets=[SECRET]).normalize(delivery(sample("lead_points_change.json")), MAPPING).events
    assert event.changes.score == 5.0
    assert event.occurred_at == datetime(2017, 6, 19, 9, 33, 59, tzinfo=UTC)


def test_mautic_takes_a_deleted_contacts_id_from_the_top_level_id() -> None:
    [event] = Mautic(secrets=[SECRET]).normalize(delivery(sample("lead_post_delete.json")), MAPPING).events
    assert (event.object_id, event.event_type) == ("52", SourceEventType.DELETED)
    assert event.changes == Changes()
    assert event.occurred_at == datetime(2017, 6, 19, 9, 34, 55, tzinfo=UTC)


def test_mautic_reads_every_event_type_of_a_queue_mode_batch() -> None:
    normalized = Mautic(secrets=[SECRET]).normalize(delivery(sample("batched_queue_mode.json")), MAPPING)
    assert [(event.object_id, event.event_type) for event in normalized.events] == [
        ("52", SourceEventType.CREATED),
        ("52", SourceEventType.CHANGED),
    ]
    assert normalized.ignored == 0
    assert len({event.id for event in normalized.events}) == 2


def test_mautic_maps_the_stage_name_through_the_funnel_definition() -> None:
    payload = sample_payload("lead_post_save_update.json")
    payload["mautic.lead_post_save_update"][0]["contact"]["stage"] = {"id": 3, "name": "MQL"}
    [event] = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING).events
    assert (event.changes.stage, event.changes.stage_raw) == (Stage.MQL, "MQL")


def test_mautic_keeps_an_unmapped_stage_name_raw_without_guessing_a_stage() -> None:
    payload = sample_payload("lead_post_save_update.json")
    payload["mautic.lead_post_save_update"][0]["contact"]["stage"] = {"id": 9, "name": "Webinar attendee"}
    [event] = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING).events
    assert (event.changes.stage, event.changes.stage_raw) == (None, "Webinar attendee")


def test_mautic_keys_an_event_by_its_type_contact_timestamp_and_modification_date() -> None:
    [event] = (
        Mautic(secrets=[SECRET]).normalize(delivery(sample("lead_post_save_update.json")), MAPPING).events
    )
    expected = delivery_hash(
        "mautic.lead_post_save_update", "52", "2017-06-19T09:32:24+00:00", "2017-06-19T09:32:24+00:00"
    )
    assert event.idempotency_key == expected
    assert event.id == event_id(SourceSystem.MAUTIC, expected)


def test_mautic_gives_a_replayed_delivery_the_same_event_ids() -> None:
    mautic = Mautic(secrets=[SECRET])
    first = mautic.normalize(delivery(sample("batched_queue_mode.json")), MAPPING)
    again = mautic.normalize(delivery(sample("batched_queue_mode.json")), MAPPING)
    assert [event.id for event in first.events] == [event.id for event in again.events]


def test_mautic_gives_a_later_update_of_the_same_contact_another_key() -> None:
    payload = sample_payload("lead_post_save_update.json")
    payload["mautic.lead_post_save_update"][0]["timestamp"] = "2017-06-19T09:35:00+00:00"
    [later] = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING).events
    [first] = (
        Mautic(secrets=[SECRET]).normalize(delivery(sample("lead_post_save_update.json")), MAPPING).events
    )
    assert later.idempotency_key != first.idempotency_key


def test_mautic_ignores_event_types_it_does_not_use() -> None:
    payload = sample_payload("lead_post_save_update.json")
    payload["mautic.email_on_open"] = [{"stat": {"id": 1}, "timestamp": "2017-06-19T09:33:00+00:00"}] * 2
    normalized = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING)
    assert [event.event_type for event in normalized.events] == [SourceEventType.CHANGED]
    assert normalized.ignored == 2


def test_mautic_acknowledges_the_test_payload_without_publishing_the_sample_contact() -> None:
    # AjaxController::sendHookTestAction nests each sample file under its key and adds "timestamp".
    payload = {
        "mautic.lead_post_save_new": sample_payload("lead_post_save_new.json"),
        "mautic.lead_post_delete": sample_payload("lead_post_delete.json"),
        "timestamp": "2024-05-06T10:00:00+00:00",
    }
    normalized = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING)
    assert normalized.events == []
    assert normalized.ignored == 2


def test_mautic_reads_field_values_wherever_the_email_field_is_grouped() -> None:
    payload = sample_payload("lead_post_save_update.json")
    fields = payload["mautic.lead_post_save_update"][0]["contact"]["fields"]
    fields["personal"] = {"email": fields["core"].pop("email")}
    [event] = Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING).events
    assert event.changes.email == "john@doe.name"


UPDATE = "mautic.lead_post_save_update"
AT = "2017-06-19T09:32:24+00:00"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([{"contact": {"id": 52}}], "JSON object"),
        ({UPDATE: {"contact": {"id": 52}}}, "list of events"),
        ({UPDATE: ["contact"]}, "not a JSON object"),
        ({UPDATE: [{"timestamp": AT}]}, "no contact"),
        ({UPDATE: [{"contact": {"id": None}, "timestamp": AT}]}, "no record id"),
        ({"mautic.lead_post_delete": [{"contact": {"id": 52}, "timestamp": AT}]}, "no record id"),
        ({UPDATE: [{"contact": {"id": 52}}]}, "no timestamp"),
        ({UPDATE: [{"contact": {"id": 52}, "timestamp": "yesterday"}]}, "ISO-8601"),
        ({UPDATE: [{"contact": {"id": 52}, "timestamp": "2017-06-19T09:32:24"}]}, "offset"),
    ],
)
def test_mautic_rejects_a_payload_that_is_not_mautics_shape(payload: Any, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING)


def test_mautic_rejects_a_body_that_is_not_json() -> None:
    with pytest.raises(InvalidPayload, match="not JSON"):
        Mautic(secrets=[SECRET]).normalize(delivery(b"not json", signature=sign(b"not json")), MAPPING)


def test_mautic_says_why_a_payload_is_invalid_without_quoting_personal_data() -> None:
    payload = sample_payload("lead_post_save_update.json")
    payload["mautic.lead_post_save_update"][0]["timestamp"] = "john@doe.name"
    with pytest.raises(InvalidPayload) as raised:
        Mautic(secrets=[SECRET]).normalize(signed(payload), MAPPING)
    assert "john" not in str(raised.value)
