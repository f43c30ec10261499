"""HubSpot adapter: official signature vectors, the documented payloads, and one broken thing per test."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from onefunnel.ingest.platforms.base import Delivery, InvalidPayload, Platform, Unauthorized
from onefunnel.ingest.platforms.hubspot import HubSpot
from onefunnel.shared.events import ObjectType, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import StageMapping, load_stage_mapping
from onefunnel.shared.stages import Stage

# The official vectors (hubspot-api-python tests/spec/utils/test_signature.py and the
# validating-requests doc page) all use this secret and URL.
DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
DOC_URL = "https://www.example.com/webhook_uri"
SDK_BODY = b"{'example_field':'example_value'}"
# The v1 example body of the validating-requests doc page.
DOC_V1_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
    b'"changeFlag":"NEW","appId":54321}]'
)
# The propertyChange example of the (legacy) Webhooks API guide.
DOC_PROPERTY_CHANGE = {
    "objectId": 1246965,
    "propertyName": "lifecyclestage",
    "propertyValue": "subscriber",
    "changeSource": "ACADEMY",
    "eventId": 3816279340,
    "subscriptionId": 25,
    "portalId": 33,
    "appId": 1160452,
    "occurredAt": 1462216307945,
    "eventType": "contact.propertyChange",
    "attemptNumber": 0,
}

SECRET = "11111111-2222-3333-4444-555555555555"
URL = "https://ingest.example.com/webhooks/hubspot"
NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _delivery(
    body: bytes,
    *,
    headers: dict[str, str],
    url: str = URL,
    method: str = "POST",
    received_at: datetime = NOW,
) -> Delivery:
    return Delivery(method=method, url=url, headers=headers, query={}, body=body, received_at=received_at)


def _v3_headers(
    body: bytes, *, secret: str = SECRET, signed_uri: str = URL, sent_at: datetime = NOW
) -> dict[str, str]:
    """Sign as HubSpot does for v3; `signed_uri` is the URI after HubSpot's decoding."""
    timestamp = _ms(sent_at)
    message = b"POST" + signed_uri.encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    return {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": timestamp}


def _signed(events: list[dict[str, Any]]) -> Delivery:
    body = json.dumps(events).encode()
    return _delivery(body, headers=_v3_headers(body))


def _event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventId": 100,
        "subscriptionId": 7,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1714996800000,
        "attemptNumber": 0,
        "objectId": 123,
        "changeSource": "CRM_UI",
    }
    return base | fields


@pytest.fixture
def mapping() -> StageMapping:
    return load_stage_mapping()


def test_hubspot_is_a_platform_and_needs_no_special_acknowledgement() -> None:
    platform: Platform = HubSpot(client_secrets=[SECRET])
    assert platform.source is SourceSystem.HUBSPOT
    assert platform.acknowledgement() is None


def test_hubspot_accepts_the_official_v3_signature_vector() -> None:
    delivery = _delivery(
        SDK_BODY,
        url=DOC_URL,
        headers={
            "x-hubspot-signature-v3": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
            "x-hubspot-request-timestamp": "15000000",
        },
        received_at=datetime.fromtimestamp(15000, UTC) + timedelta(seconds=30),
    )
    HubSpot(client_secrets=[DOC_SECRET]).verify(delivery)


def test_hubspot_accepts_a_v3_signature_made_with_the_second_secret_during_rotation() -> None:
    body = json.dumps([_event(subscriptionType="contact.creation")]).encode()
    delivery = _delivery(body, headers=_v3_headers(body, secret=SECRET))
    HubSpot(client_secrets=["old-secret", SECRET]).verify(delivery)


def test_hubspot_rejects_a_wrong_secret() -> None:
    body = b"[]"
    with pytest.raises(Unauthorized, match="does not match"):
        HubSpot(client_secrets=["another-secret"]).verify(_delivery(body, headers=_v3_headers(body)))


def test_hubspot_rejects_a_tampered_body() -> None:
    headers = _v3_headers(b'[{"objectId":1}]')
    with pytest.raises(Unauthorized, match="does not match"):
        HubSpot(client_secrets=[SECRET]).verify(_delivery(b'[{"objectId":2}]', headers=headers))


def test_hubspot_rejects_a_request_signed_for_another_url() -> None:
    body = b"[]"
    headers = _v3_headers(body, signed_uri="https://attacker.example.com/webhooks/hubspot")
    with pytest.raises(Unauthorized, match="does not match"):
        HubSpot(client_secrets=[SECRET]).verify(_delivery(body, headers=headers))


def test_hubspot_rejects_a_timestamp_older_than_five_minutes() -> None:
    body = b"[]"
    headers = _v3_headers(body, sent_at=NOW - timedelta(minutes=5, milliseconds=1))
    with pytest.raises(Unauthorized, match="5 minutes"):
        HubSpot(client_secrets=[SECRET]).verify(_delivery(body, headers=headers))


def test_hubspot_rejects_a_timestamp_more_than_five_minutes_in_the_future() -> None:
    body = b"[]"
    headers = _v3_headers(body, sent_at=NOW + timedelta(minutes=5, milliseconds=1))
    with pytest.raises(Unauthorized, match="5 minutes"):
        HubSpot(client_secrets=[SECRET]).verify(_delivery(body, headers=headers))


def test_hubspot_accepts_timestamps_exactly_five_minutes_either_side() -> None:
    body = b"[]"
    hubspot = HubSpot(client_secrets=[SECRET])
    for sent_at in (NOW - timedelta(minutes=5), NOW + timedelta(minutes=5)):
        hubspot.verify(_delivery(body, headers=_v3_headers(body, sent_at=sent_at)))


@pytest.mark.parametrize("missing", ["x-hubspot-signature-v3", "x-hubspot-request-timestamp"])
def test_hubspot_rejects_a_request_without_a_signature_header(missing: str) -> None:
    body = b"[]"
    headers = _v3_headers(body)
    del headers[missing]
    with pytest.raises(Unauthorized, match="missing"):
        HubSpot(client_secrets=[SECRET]).verify(_delivery(body, headers=headers))


def test_hubspot_rejects_a_timestamp_that_is_not_epoch_milliseconds() -> None:
    body = b"[]"
    headers = _v3_headers(body) | {"x-hubspot-request-timestamp": "2024-05-06T12:00:00Z"}
    with pytest.raises(Unauthorized, match="malformed"):
        HubSpot(client_secrets=[SECRET]).verify(_delivery(body, headers=headers))


def test_hubspot_rejects_everything_when_no_secret_is_configured() -> None:
    body = b"[]"
    with pytest.raises(Unauthorized, match="no HubSpot client secret"):
        HubSpot(client_secrets=[]).verify(_delivery(body, headers=_v3_headers(body)))


def test_hubspot_decodes_only_the_listed_escapes_of_the_uri_before_checking_v3() -> None:
    url = "https://ingest.example.com/webhooks/hubspot?source=a%3Ab%2Fc%40d%2Ae&name=x%20y%26z"
    # HubSpot signs %3A %2F %40 %2A decoded, and leaves %20 and %26 (not in its list) as sent.
    signed_uri = "https://ingest.example.com/webhooks/hubspot?source=a:b/c@d*e&name=x%20y%26z"
    body = b"[]"
    hubspot = HubSpot(client_secrets=[SECRET])
    hubspot.verify(_delivery(body, url=url, headers=_v3_headers(body, signed_uri=signed_uri)))
    with pytest.raises(Unauthorized):
        hubspot.verify(_delivery(body, url=url, headers=_v3_headers(body, signed_uri=url)))


def test_hubspot_rejects_legacy_signatures_unless_configured_for_them() -> None:
    delivery = _delivery(
        DOC_V1_BODY,
        url=DOC_URL,
        headers={
            "x-hubspot-signature": "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de",
            "x-hubspot-signature-version": "v1",
        },
    )
    with pytest.raises(Unauthorized, match="missing X-HubSpot-Signature-v3"):
        HubSpot(client_secrets=[DOC_SECRET]).verify(delivery)
    HubSpot(client_secrets=[DOC_SECRET], accept_legacy_signatures=True).verify(delivery)


@pytest.mark.parametrize(
    ("version", "method", "body", "signature"),
    [
        ("v1", "POST", SDK_BODY, "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"),
        ("v2", "POST", SDK_BODY, "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"),
        ("v2", "GET", b"", "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"),
        (
            "v2",
            "POST",
            b'{"example_field":"example_value"}',
            "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900",
        ),
    ],
)
def test_hubspot_accepts_the_official_legacy_vectors_when_configured(
    version: str, method: str, body: bytes, signature: str
) -> None:
    headers = {"x-hubspot-signature": signature, "x-hubspot-signature-version": version}
    delivery = _delivery(body, url=DOC_URL, method=method, headers=headers)
    HubSpot(client_secrets=[DOC_SECRET], accept_legacy_signatures=True).verify(delivery)


def test_hubspot_does_not_fall_back_to_legacy_when_the_v3_signature_fails() -> None:
    headers = {
        "x-hubspot-signature": "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de",
        "x-hubspot-signature-version": "v1",
    } | _v3_headers(DOC_V1_BODY, secret="not-the-secret")
    with pytest.raises(Unauthorized, match="v3 does not match"):
        HubSpot(client_secrets=[DOC_SECRET], accept_legacy_signatures=True).verify(
            _delivery(DOC_V1_BODY, url=DOC_URL, headers=headers)
        )


def test_hubspot_rejects_an_unknown_legacy_signature_version() -> None:
    headers = {"x-hubspot-signature": "00", "x-hubspot-signature-version": "v9"}
    with pytest.raises(Unauthorized, match="unsupported"):
        HubSpot(client_secrets=[DOC_SECRET], accept_legacy_signatures=True).verify(
            _delivery(b"[]", headers=headers)
        )


def test_hubspot_normalizes_the_documented_lifecycle_stage_change(mapping: StageMapping) -> None:
    result = HubSpot(client_secrets=[SECRET]).normalize(_signed([DOC_PROPERTY_CHANGE]), mapping)
    assert result.ignored == 0
    [event] = result.events
    assert event.source is SourceSystem.HUBSPOT
    assert event.account_id == "33"
    assert event.object_type is ObjectType.CONTACT
    assert event.object_id == "1246965"
    assert event.event_type is SourceEventType.CHANGED
    assert event.changes.stage is Stage.SUBSCRIBER
    assert event.changes.stage_raw == "subscriber"
    assert event.change_source == "ACADEMY"
    assert event.idempotency_key == "33:25:3816279340"
    assert event.occurred_at == datetime(2016, 5, 2, 19, 11, 47, 945000, tzinfo=UTC)
    assert event.received_at == NOW


def test_hubspot_normalizes_the_documented_contact_creation(mapping: StageMapping) -> None:
    delivery = _delivery(DOC_V1_BODY, headers=_v3_headers(DOC_V1_BODY))
    [event] = HubSpot(client_secrets=[SECRET]).normalize(delivery, mapping).events
    assert event.event_type is SourceEventType.CREATED
    assert (event.object_id, event.account_id, event.change_source) == ("123", "62515", "CRM")
    assert event.idempotency_key == "62515:12345:1"
    assert event.occurred_at == datetime(2019, 7, 26, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "stage"),
    [("marketingqualifiedlead", Stage.MQL), ("customer", Stage.CUSTOMER), ("other", None), ("1234567", None)],
)
def test_hubspot_maps_lifecycle_stages_through_the_funnel_definition(
    mapping: StageMapping, value: str, stage: Stage | None
) -> None:
    change = _event(
        subscriptionType="contact.propertyChange", propertyName="lifecyclestage", propertyValue=value
    )
    [event] = HubSpot(client_secrets=[SECRET]).normalize(_signed([change]), mapping).events
    assert (event.changes.stage, event.changes.stage_raw) == (stage, value)


def test_hubspot_reports_a_cleared_lifecycle_stage_as_an_empty_raw_value(mapping: StageMapping) -> None:
    change = _event(
        subscriptionType="contact.propertyChange", propertyName="lifecyclestage", propertyValue=""
    )
    [event] = HubSpot(client_secrets=[SECRET]).normalize(_signed([change]), mapping).events
    assert (event.changes.stage, event.changes.stage_raw) == (None, "")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("hs_lead_status", "IN_PROGRESS", {"status": "IN_PROGRESS"}),
        ("hs_lead_status", "", {"status": ""}),
        ("hubspotscore", "42.5", {"score": 42.5}),
        ("hubspot_owner_id", "910", {"owner_id": "910"}),
        ("email", "ada@example.com", {"email": "ada@example.com"}),
    ],
)
def test_hubspot_reads_the_tracked_contact_properties(
    mapping: StageMapping, name: str, value: str, expected: dict[str, object]
) -> None:
    change = _event(subscriptionType="contact.propertyChange", propertyName=name, propertyValue=value)
    [event] = HubSpot(client_secrets=[SECRET]).normalize(_signed([change]), mapping).events
    assert {k: v for k, v in msgspec.structs.asdict(event.changes).items() if v is not None} == expected


def test_hubspot_reads_the_generic_object_format_for_contacts_only(mapping: StageMapping) -> None:
    contact = _event(
        eventId=1,
        subscriptionType="object.propertyChange",
        objectTypeId="0-1",
        propertyName="lifecyclestage",
        propertyValue="lead",
    )
    company = _event(eventId=2, subscriptionType="object.creation", objectTypeId="0-2")
    result = HubSpot(client_secrets=[SECRET]).normalize(_signed([contact, company]), mapping)
    assert result.ignored == 1
    [event] = result.events
    assert (event.event_type, event.changes.stage) == (SourceEventType.CHANGED, Stage.LEAD)


def test_hubspot_ignores_untracked_properties_other_objects_and_other_event_kinds(
    mapping: StageMapping,
) -> None:
    unused = [
        _event(
            eventId=1,
            subscriptionType="contact.propertyChange",
            propertyName="firstname",
            propertyValue="Ada",
        ),
        _event(eventId=2, subscriptionType="company.creation"),
        _event(
            eventId=3, subscriptionType="deal.propertyChange", propertyName="dealstage", propertyValue="won"
        ),
        _event(eventId=4, subscriptionType="contact.associationChange"),
        _event(
            eventId=5,
            subscriptionType="contact.propertyChange",
            propertyName="hubspotscore",
            propertyValue="",
        ),
    ]
    result = HubSpot(client_secrets=[SECRET]).normalize(_signed(unused), mapping)
    assert (result.events, result.ignored) == ([], 5)


def test_hubspot_reads_a_merge_into_the_primary_contact(mapping: StageMapping) -> None:
    merge = _event(subscriptionType="contact.merge", primaryObjectId=1, mergedObjectIds=[2, 3])
    [event] = HubSpot(client_secrets=[SECRET]).normalize(_signed([merge]), mapping).events
    assert event.event_type is SourceEventType.MERGED
    assert (event.object_id, event.merged_object_ids) == ("1", ["2", "3"])


def test_hubspot_reads_a_merge_that_created_a_new_contact(mapping: StageMapping) -> None:
    merge = _event(subscriptionType="contact.merge", primaryObjectId=1, mergedObjectIds=[2], newObjectId=9)
    [event] = HubSpot(client_secrets=[SECRET]).normalize(_signed([merge]), mapping).events
    assert (event.object_id, event.merged_object_ids) == ("9", ["1", "2"])


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        ("contact.deletion", SourceEventType.DELETED),
        ("contact.privacyDeletion", SourceEventType.DELETED),
        ("contact.restore", SourceEventType.RESTORED),
    ],
)
def test_hubspot_reads_deletions_and_restores(
    mapping: StageMapping, kind: str, event_type: SourceEventType
) -> None:
    [event] = (
        HubSpot(client_secrets=[SECRET]).normalize(_signed([_event(subscriptionType=kind)]), mapping).events
    )
    assert (event.event_type, event.object_id) == (event_type, "123")


def test_hubspot_keeps_the_same_event_id_when_an_event_is_retried(mapping: StageMapping) -> None:
    hubspot = HubSpot(client_secrets=[SECRET])
    first = _event(subscriptionType="contact.deletion", attemptNumber=0)
    retry = first | {"attemptNumber": 3}
    [original] = hubspot.normalize(_signed([first]), mapping).events
    [again] = hubspot.normalize(_signed([retry]), mapping).events
    assert (again.id, again.idempotency_key) == (original.id, original.idempotency_key)


def test_hubspot_keeps_events_apart_that_share_an_event_id_in_other_subscriptions(
    mapping: StageMapping,
) -> None:
    events = [
        _event(subscriptionId=1, subscriptionType="contact.creation"),
        _event(subscriptionId=2, subscriptionType="contact.deletion"),
    ]
    created, deleted = HubSpot(client_secrets=[SECRET]).normalize(_signed(events), mapping).events
    assert created.id != deleted.id


def test_hubspot_uses_the_receive_time_when_an_event_has_no_occurred_at(mapping: StageMapping) -> None:
    creation = _event(subscriptionType="contact.creation")
    del creation["occurredAt"]
    [event] = HubSpot(client_secrets=[SECRET]).normalize(_signed([creation]), mapping).events
    assert event.occurred_at == NOW


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"eventId": 1}', "not a JSON array"),
        (b"[1]", r"Expected `object`, got `int` - at `\$\[0\]`"),
        (b'[{"eventId": 1}]', "no subscriptionType"),
    ],
)
def test_hubspot_rejects_a_body_that_is_not_a_batch_of_events(
    mapping: StageMapping, body: bytes, reason: str
) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        HubSpot(client_secrets=[SECRET]).normalize(_delivery(body, headers={}), mapping)


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"eventId": None}, "eventId is missing"),
        ({"portalId": True}, r"got `bool` - at `\$\[0\]\.portalId`"),
        ({"objectId": ""}, r"length >= 1 - at `\$\[0\]\.objectId`"),
        ({"occurredAt": "yesterday"}, "occurredAt"),
        ({"propertyName": "hubspotscore", "propertyValue": "high"}, "hubspotscore is not a number"),
        ({"propertyName": "email", "propertyValue": 42}, r"got `int` - at `\$\[0\]\.propertyValue`"),
    ],
)
def test_hubspot_rejects_a_tracked_event_with_broken_fields(
    mapping: StageMapping, broken: dict[str, object], reason: str
) -> None:
    change = _event(subscriptionType="contact.propertyChange", propertyName="email", propertyValue="a@b.c")
    with pytest.raises(InvalidPayload, match=reason) as error:
        HubSpot(client_secrets=[SECRET]).normalize(_signed([change | broken]), mapping)
    assert "a@b.c" not in str(error.value)


@pytest.mark.parametrize(
    "merge",
    [
        {"primaryObjectId": 1},
        {"primaryObjectId": 1, "mergedObjectIds": "2"},
        {"primaryObjectId": 1, "mergedObjectIds": []},
        {"mergedObjectIds": [2]},
    ],
)
def test_hubspot_rejects_a_merge_without_both_sides(mapping: StageMapping, merge: dict[str, object]) -> None:
    with pytest.raises(InvalidPayload):
        HubSpot(client_secrets=[SECRET]).normalize(
            _signed([_event(subscriptionType="contact.merge", **merge)]), mapping
        )


def test_hubspot_reports_the_original_source_and_the_campaign_property(mapping: StageMapping) -> None:
    events = [
        _event(
            eventId=1,
            subscriptionType="contact.propertyChange",
            propertyName="utm_campaign",
            propertyValue="spring-webinar",
        ),
        _event(
            eventId=2,
            subscriptionType="contact.propertyChange",
            propertyName="hs_analytics_source",
            propertyValue="PAID_SEARCH",
        ),
    ]

    first, second = HubSpot(client_secrets=[SECRET]).normalize(_signed(events), mapping).events

    assert first.changes.campaign == "spring-webinar"
    assert second.changes.lead_source == "PAID_SEARCH"
