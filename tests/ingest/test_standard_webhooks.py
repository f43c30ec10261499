"""Generic (Standard Webhooks) adapter: the official vector, our body shape, one broken thing per test."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from onefunnel.ingest.platforms.base import Delivery, InvalidPayload, Platform, Unauthorized
from onefunnel.ingest.platforms.standard_webhooks import StandardWebhooks
from onefunnel.shared.events import ObjectType, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import StageMapping, load_stage_mapping
from onefunnel.shared.stages import Stage

# The vector of the reference library's test_sign_function (standard-webhooks libraries/python).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(b"a-24-byte-test-signing-k").decode()
MESSAGE_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)


def _delivery(body: bytes, *, headers: dict[str, str], received_at: datetime = NOW) -> Delivery:
    return Delivery(
        method="POST",
        url="https://ingest.example.com/webhooks/generic",
        headers=headers,
        query={},
        body=body,
        received_at=received_at,
    )


def _headers(
    body: bytes, *, secret: str = SECRET, message_id: str = MESSAGE_ID, sent_at: datetime = NOW
) -> dict[str, str]:
    """Sign as a Standard Webhooks sender does."""
    timestamp = str(int(sent_at.timestamp()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def _signed(document: dict[str, Any], *, message_id: str = MESSAGE_ID) -> Delivery:
    body = json.dumps(document).encode()
    return _delivery(body, headers=_headers(body, message_id=message_id))


def _document(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "contact.changed",
        "object_type": "contact",
        "object_id": "c-42",
        "occurred_at": "2024-05-06T13:59:30+02:00",
    }
    return base | fields


@pytest.fixture
def mapping() -> StageMapping:
    return load_stage_mapping()


def test_generic_is_a_platform_and_needs_no_special_acknowledgement() -> None:
    platform: Platform = StandardWebhooks(secrets=[SECRET])
    assert platform.source is SourceSystem.GENERIC
    assert platform.acknowledgement() is None


def test_generic_accepts_the_official_standard_webhooks_vector() -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    received_at = datetime.fromtimestamp(SPEC_TIMESTAMP, UTC) + timedelta(seconds=2)
    StandardWebhooks(secrets=[SPEC_SECRET]).verify(
        _delivery(SPEC_BODY, headers=headers, received_at=received_at)
    )


def test_generic_finds_the_v1_signature_among_several_in_the_header() -> None:
    signatures = " ".join(
        [
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==",
            "not-a-signature",
            SPEC_SIGNATURE,
        ]
    )
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": signatures,
    }
    received_at = datetime.fromtimestamp(SPEC_TIMESTAMP, UTC)
    StandardWebhooks(secrets=[SPEC_SECRET]).verify(
        _delivery(SPEC_BODY, headers=headers, received_at=received_at)
    )


def test_generic_accepts_a_signature_made_with_the_second_secret_during_rotation() -> None:
    body = b"{}"
    StandardWebhooks(secrets=[SPEC_SECRET, SECRET]).verify(_delivery(body, headers=_headers(body)))


def test_generic_accepts_a_secret_whose_base64_padding_was_dropped() -> None:
    body = b"{}"
    padded = "whsec_" + base64.b64encode(b"a 23-byte signing key!!").decode()
    assert padded.endswith("=")
    headers = _headers(body, secret=padded)
    StandardWebhooks(secrets=[padded.rstrip("=")]).verify(_delivery(body, headers=headers))


def test_generic_rejects_a_wrong_secret() -> None:
    body = b"{}"
    with pytest.raises(Unauthorized, match="no webhook-signature matches"):
        StandardWebhooks(secrets=[SPEC_SECRET]).verify(_delivery(body, headers=_headers(body)))


def test_generic_rejects_a_tampered_body() -> None:
    headers = _headers(b'{"object_id":"1"}')
    with pytest.raises(Unauthorized, match="no webhook-signature matches"):
        StandardWebhooks(secrets=[SECRET]).verify(_delivery(b'{"object_id":"2"}', headers=headers))


def test_generic_rejects_a_signature_replayed_under_another_webhook_id() -> None:
    body = b"{}"
    headers = _headers(body) | {"webhook-id": "msg_other"}
    with pytest.raises(Unauthorized, match="no webhook-signature matches"):
        StandardWebhooks(secrets=[SECRET]).verify(_delivery(body, headers=headers))


def test_generic_rejects_a_timestamp_older_than_five_minutes() -> None:
    body = b"{}"
    headers = _headers(body, sent_at=NOW - timedelta(minutes=5, seconds=1))
    with pytest.raises(Unauthorized, match="5 minutes"):
        StandardWebhooks(secrets=[SECRET]).verify(_delivery(body, headers=headers))


def test_generic_rejects_a_timestamp_more_than_five_minutes_in_the_future() -> None:
    body = b"{}"
    headers = _headers(body, sent_at=NOW + timedelta(minutes=5, seconds=1))
    with pytest.raises(Unauthorized, match="5 minutes"):
        StandardWebhooks(secrets=[SECRET]).verify(_delivery(body, headers=headers))


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_generic_rejects_a_delivery_without_a_signature_header(missing: str) -> None:
    body = b"{}"
    headers = _headers(body)
    del headers[missing]
    with pytest.raises(Unauthorized, match=f"missing {missing}"):
        StandardWebhooks(secrets=[SECRET]).verify(_delivery(body, headers=headers))


@pytest.mark.parametrize(
    "broken", [{"webhook-timestamp": "1714996800.5"}, {"webhook-timestamp": "soon"}, {"webhook-id": "msg.1"}]
)
def test_generic_rejects_malformed_signature_headers(broken: dict[str, str]) -> None:
    body = b"{}"
    with pytest.raises(Unauthorized, match="malformed"):
        StandardWebhooks(secrets=[SECRET]).verify(_delivery(body, headers=_headers(body) | broken))


def test_generic_rejects_everything_when_no_secret_is_configured() -> None:
    body = b"{}"
    with pytest.raises(Unauthorized, match="no signing secret"):
        StandardWebhooks(secrets=[]).verify(_delivery(body, headers=_headers(body)))


@pytest.mark.parametrize("secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_"])
def test_generic_refuses_a_secret_that_is_not_whsec_base64(secret: str) -> None:
    with pytest.raises(ValueError, match="Standard Webhooks secret"):
        StandardWebhooks(secrets=[secret])


def test_generic_normalizes_a_stage_change(mapping: StageMapping) -> None:
    document = _document(changes={"stage": "mql", "score": 71, "campaign": "spring-webinar"})
    result = StandardWebhooks(secrets=[SECRET]).normalize(_signed(document), mapping)
    assert result.ignored == 0
    [event] = result.events
    assert event.source is SourceSystem.GENERIC
    assert event.account_id is None
    assert event.object_type is ObjectType.CONTACT
    assert event.object_id == "c-42"
    assert event.event_type is SourceEventType.CHANGED
    assert {k: v for k, v in msgspec.structs.asdict(event.changes).items() if v is not None} == {
        "stage": Stage.MQL,
        "stage_raw": "mql",
        "score": 71.0,
        "campaign": "spring-webinar",
    }
    assert event.idempotency_key == MESSAGE_ID
    assert event.occurred_at == datetime(2024, 5, 6, 11, 59, 30, tzinfo=UTC)
    assert event.received_at == NOW


def test_generic_reads_every_changes_field(mapping: StageMapping) -> None:
    changes = {
        "stage": "customer",
        "status": "won",
        "score": 12.5,
        "owner_id": "u-7",
        "email": "ada@example.com",
        "campaign": "c-1",
        "lead_source": "webinar",
    }
    [event] = (
        StandardWebhooks(secrets=[SECRET]).normalize(_signed(_document(changes=changes)), mapping).events
    )
    assert msgspec.structs.asdict(event.changes) == changes | {
        "stage": Stage.CUSTOMER,
        "stage_raw": "customer",
    }


def test_generic_reports_a_cleared_stage_as_an_empty_raw_value(mapping: StageMapping) -> None:
    [event] = (
        StandardWebhooks(secrets=[SECRET])
        .normalize(_signed(_document(changes={"stage": ""})), mapping)
        .events
    )
    assert (event.changes.stage, event.changes.stage_raw) == (None, "")


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        ("contact.created", SourceEventType.CREATED),
        ("contact.deleted", SourceEventType.DELETED),
        ("contact.restored", SourceEventType.RESTORED),
    ],
)
def test_generic_reads_lifecycle_events_without_changes(
    mapping: StageMapping, kind: str, event_type: SourceEventType
) -> None:
    [event] = StandardWebhooks(secrets=[SECRET]).normalize(_signed(_document(type=kind)), mapping).events
    assert (event.event_type, event.object_id) == (event_type, "c-42")


def test_generic_reads_a_merge(mapping: StageMapping) -> None:
    document = _document(type="contact.merged", merged_object_ids=["c-7", "c-8"])
    [event] = StandardWebhooks(secrets=[SECRET]).normalize(_signed(document), mapping).events
    assert event.event_type is SourceEventType.MERGED
    assert (event.object_id, event.merged_object_ids) == ("c-42", ["c-7", "c-8"])


def test_generic_keeps_the_same_event_id_when_a_delivery_is_retried(mapping: StageMapping) -> None:
    generic = StandardWebhooks(secrets=[SECRET])
    [first] = generic.normalize(_signed(_document()), mapping).events
    [again] = generic.normalize(_signed(_document()), mapping).events
    [other] = generic.normalize(_signed(_document(), message_id="msg_other"), mapping).events
    assert again.id == first.id
    assert other.id != first.id


@pytest.mark.parametrize("kind", ["contact.opened", "invoice.paid"])
def test_generic_ignores_event_types_it_does_not_use(mapping: StageMapping, kind: str) -> None:
    document = {"type": kind, "timestamp": "2024-05-06T12:00:00Z", "data": {"id": "1"}}
    result = StandardWebhooks(secrets=[SECRET]).normalize(_signed(document), mapping)
    assert (result.events, result.ignored) == ([], 1)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (_document(object_type="deal"), "object_type"),
        (_document(object_id=""), "object_id"),
        (_document(object_id=42), "object_id"),
        (_document(occurred_at="2024-05-06T12:00:00"), "occurred_at: timezone_aware"),
        (_document(occurred_at=1714996800), "occurred_at"),
        (_document(changes={"lifecyclestage": "mql"}), "changes.lifecyclestage: extra_forbidden"),
        (_document(changes={"score": "high"}), "changes.score"),
        (_document(changes={"stage": "marketingqualifiedlead"}), "not a canonical stage"),
        (_document(type="contact.merged"), "merged_object_ids is required"),
        (_document(merged_object_ids=["c-7"]), "merged_object_ids is required"),
        (_document(type="contact.merged", merged_object_ids=["c-42"]), "contains object_id"),
    ],
)
def test_generic_rejects_a_body_that_breaks_the_documented_shape(
    mapping: StageMapping, document: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        StandardWebhooks(secrets=[SECRET]).normalize(_signed(document), mapping)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not json", "not JSON"), (b"[]", "JSON object with a type"), (b"{}", "with a type")],
)
def test_generic_rejects_a_body_that_is_not_an_event(mapping: StageMapping, body: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        StandardWebhooks(secrets=[SECRET]).normalize(_delivery(body, headers=_headers(body)), mapping)


def test_generic_does_not_echo_personal_data_when_rejecting_a_body(mapping: StageMapping) -> None:
    document = _document(changes={"email": ["ada@example.com"]})
    with pytest.raises(InvalidPayload, match=r"changes\.email") as error:
        StandardWebhooks(secrets=[SECRET]).normalize(_signed(document), mapping)
    assert "ada@example.com" not in str(error.value)


def test_generic_rejects_a_webhook_id_too_long_to_be_an_idempotency_key(mapping: StageMapping) -> None:
    with pytest.raises(InvalidPayload, match="webhook-id"):
        StandardWebhooks(secrets=[SECRET]).normalize(_signed(_document(), message_id="m" * 513), mapping)
