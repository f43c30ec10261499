"""Salesforce adapter: Outbound Messages (SOAP) and signed JSON callouts.

The Outbound Message bodies follow the envelope of the Outbound Messaging WSDL (SOAP API Developer
Guide, "Understanding the Outbound Messaging WSDL") in the form Salesforce posts it: the envelope
declares xsd/xsi, `notifications` holds OrganizationId, ActionId, a nil SessionId, the two URLs and
the Notifications, each sObject declaring the `sf` prefix itself. The callout vector was computed
independently with `openssl dgst -sha256 -hmac` (see docs/platforms/salesforce.md).
"""

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from onefunnel.ingest.platforms.base import Delivery, InvalidPayload, Unauthorized
from onefunnel.ingest.platforms.salesforce import Salesforce
from onefunnel.shared.events import ObjectType, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import StageMapping, load_stage_mapping
from onefunnel.shared.stages import Stage

ORG_ID = "00D5e000000KQ2eEAG"
NOW = datetime(2024, 5, 6, 12, 53, 20, tzinfo=UTC)  # 1715000000
SECRET = "onefunnel-test-secret"
MAPPING = load_stage_mapping()


def _envelope(sobject_type: str, *notifications: str, org_id: str = ORG_ID) -> bytes:
    body = "".join(
        f"<Notification><Id>{notification_id}</Id>"
        f'<sObject xsi:type="sf:{sobject_type}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"{fields}</sObject></Notification>"
        for notification_id, fields in (n.split("|", 1) for n in notifications)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "<soapenv:Body>\n"
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">\n'
        f"<OrganizationId>{org_id}</OrganizationId>\n"
        "<ActionId>04k5e000000CaRkAAK</ActionId>\n"
        '<SessionId xsi:nil="true"/>\n'
        "<EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/60.0/00D5e000000KQ2e</EnterpriseUrl>\n"
        "<PartnerUrl>https://example.my.salesforce.com/services/Soap/u/60.0/00D5e000000KQ2e</PartnerUrl>\n"
        f"{body}\n"
        "</notifications>\n"
        "</soapenv:Body>\n"
        "</soapenv:Envelope>\n"
    ).encode()


LEAD_MESSAGE = _envelope(
    "Lead",
    "04l5e00000Gx7QzAAJ|<sf:Id>00Q5e00000AbCdEEAV</sf:Id><sf:Email>ada@example.com</sf:Email>"
    "<sf:IsConverted>false</sf:IsConverted><sf:LastModifiedById>0055e000001XyZaAAK</sf:LastModifiedById>"
    "<sf:LastModifiedDate>2024-05-06T12:50:00.000Z</sf:LastModifiedDate><sf:LeadSource>Web</sf:LeadSource>"
    "<sf:OwnerId>0055e000001XyZaAAK</sf:OwnerId><sf:Status>Working - Contacted</sf:Status>",
    "04l5e00000Gx7R0AAJ|<sf:Id>00Q5e00000AbCdFEAV</sf:Id><sf:IsConverted>true</sf:IsConverted>"
    "<sf:Status>Closed - Converted</sf:Status>"
    "<sf:SystemModstamp>2024-05-06T12:51:00.000Z</sf:SystemModstamp>",
)
OPPORTUNITY_MESSAGE = _envelope(
    "Opportunity",
    "04l5e00000Gx7R1AAJ|<sf:Id>0065e00000XyZ12AAF</sf:Id><sf:CampaignId>7015e000000AbCdAAK</sf:CampaignId>"
    "<sf:IsClosed>true</sf:IsClosed><sf:IsWon>true</sf:IsWon><sf:StageName>Closed Won</sf:StageName>",
)
CALLOUT_BODY = (
    b'{"organizationId":"00D5e000000KQ2eEAG","events":[{"eventId":"00Q5e00000AbCdEEAV:1715000000000",'
    b'"objectType":"Lead","recordId":"00Q5e00000AbCdEEAV","fields":{"Status":"Working - Contacted",'
    b'"IsConverted":false,"OwnerId":"0055e000001XyZaAAK","LastModifiedDate":"2024-05-06T12:53:20.000Z"}}]}'
)
CALLOUT_SIGNATURE = "sha256=2a73d1bfd9ecdd3e2b2dfc854d82e307866d5aeee54d20f875228e3217ec7c98"


def _outbound(body: bytes = LEAD_MESSAGE, *, token: str | None = None) -> Delivery:
    query = {} if token is None else {"token": token}
    return Delivery(
        method="POST",
        url="https://ingest.example.com/webhooks/salesforce" + (f"?token={token}" if token else ""),
        headers={"content-type": "text/xml; charset=utf-8", "soapaction": '""'},
        query=query,
        body=body,
        received_at=NOW,
    )


def _callout(
    body: bytes = CALLOUT_BODY,
    *,
    timestamp: int = 1715000000,
    secret: str = SECRET,
    signature: str | None = None,
) -> Delivery:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return Delivery(
        method="POST",
        url="https://ingest.example.com/webhooks/salesforce",
        headers={
            "content-type": "application/json",
            "x-onefunnel-timestamp": str(timestamp),
            "x-onefunnel-signature": signature or f"sha256={mac}",
        },
        query={},
        body=body,
        received_at=NOW,
    )


def _callout_body(*events: dict[str, object]) -> bytes:
    return json.dumps({"organizationId": ORG_ID, "events": list(events)}).encode()


def _platform(**config: list[str]) -> Salesforce:
    return Salesforce(**{"org_ids": [ORG_ID], "callout_secrets": [SECRET], **config})


# Outbound Messages: verification


def test_salesforce_accepts_an_outbound_message_from_a_configured_organization() -> None:
    _platform().verify(_outbound())


def test_salesforce_accepts_the_fifteen_character_form_of_the_organization_id() -> None:
    _platform(org_ids=["00D5e000000KQ2e"]).verify(_outbound())


def test_salesforce_rejects_an_outbound_message_from_another_organization() -> None:
    with pytest.raises(Unauthorized, match="OrganizationId"):
        _platform(org_ids=["00D5e000000KQ2fEAG"]).verify(_outbound())


def test_salesforce_compares_organization_ids_case_sensitively() -> None:
    with pytest.raises(Unauthorized, match="OrganizationId"):
        _platform(org_ids=["00d5e000000kq2eEAG"]).verify(_outbound())


def test_salesforce_rejects_every_outbound_message_when_no_organization_is_configured() -> None:
    with pytest.raises(Unauthorized, match="no Salesforce organization"):
        _platform(org_ids=[]).verify(_outbound())


def test_salesforce_requires_the_token_when_tokens_are_configured() -> None:
    with pytest.raises(Unauthorized, match="missing token"):
        _platform(outbound_tokens=["t0ken-a"]).verify(_outbound())


def test_salesforce_rejects_a_wrong_token() -> None:
    with pytest.raises(Unauthorized, match="token mismatch"):
        _platform(outbound_tokens=["t0ken-a"]).verify(_outbound(token="t0ken-b"))


def test_salesforce_accepts_the_second_token_during_rotation() -> None:
    _platform(outbound_tokens=["t0ken-old", "t0ken-new"]).verify(_outbound(token="t0ken-new"))


def test_salesforce_rejects_an_outbound_message_with_a_document_type_declaration() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]>' + LEAD_MESSAGE.split(b"?>", 1)[1]
    with pytest.raises(Unauthorized, match="OrganizationId"):
        _platform().verify(_outbound(bomb))
    with pytest.raises(InvalidPayload, match="XML"):
        _platform().normalize(_outbound(bomb), MAPPING)


def test_salesforce_rejects_a_body_of_an_unknown_content_type() -> None:
    delivery = _outbound()
    delivery = Delivery(**{**delivery.__dict__, "headers": {"content-type": "text/plain"}})
    with pytest.raises(Unauthorized, match="Content-Type"):
        _platform().verify(delivery)


def test_salesforce_refuses_a_configured_organization_id_that_is_not_an_id() -> None:
    with pytest.raises(ValueError, match="org_ids"):
        Salesforce(org_ids=["acme"])


# Outbound Messages: normalization and ack


def test_salesforce_normalizes_each_lead_notification_into_an_event() -> None:
    normalized = _platform().normalize(_outbound(), MAPPING)

    assert normalized.ignored == 0
    working, converted = normalized.events
    assert working.idempotency_key == "04l5e00000Gx7QzAAJ"
    assert working.source is SourceSystem.SALESFORCE
    assert working.account_id == ORG_ID
    assert working.object_type is ObjectType.LEAD
    assert working.object_id == "00Q5e00000AbCdEEAV"
    assert working.event_type is SourceEventType.CHANGED
    assert working.changes.stage is Stage.SAL
    assert working.changes.stage_raw == working.changes.status == "Working - Contacted"
    assert working.changes.owner_id == "0055e000001XyZaAAK"
    assert working.changes.email == "ada@example.com"
    assert working.changes.lead_source == "Web"
    assert working.change_source == "0055e000001XyZaAAK"
    assert working.occurred_at == datetime(2024, 5, 6, 12, 50, tzinfo=UTC)
    assert working.received_at == NOW
    assert converted.changes.stage is Stage.SQL
    assert converted.occurred_at == datetime(2024, 5, 6, 12, 51, tzinfo=UTC)


def test_salesforce_gives_a_redelivered_notification_the_same_event_id() -> None:
    first = _platform().normalize(_outbound(), MAPPING).events[0]
    again = _platform().normalize(_outbound(), MAPPING).events[0]
    assert first.id == again.id


def test_salesforce_maps_an_opportunity_stage_and_outcome() -> None:
    (won,) = _platform().normalize(_outbound(OPPORTUNITY_MESSAGE), MAPPING).events

    assert won.object_type is ObjectType.OPPORTUNITY
    assert won.changes.stage is Stage.CUSTOMER
    assert won.changes.stage_raw == "Closed Won"
    assert won.changes.status == "won"
    assert won.changes.campaign == "7015e000000AbCdAAK"
    assert won.occurred_at == NOW  # no LastModifiedDate selected: the receipt time stands in


def test_salesforce_falls_back_to_the_opportunity_outcome_for_an_unmapped_stage() -> None:
    message = _envelope(
        "Opportunity",
        "04l5e00000Gx7R1AAJ|<sf:Id>0065e00000XyZ12AAF</sf:Id><sf:IsClosed>true</sf:IsClosed>"
        "<sf:IsWon>false</sf:IsWon><sf:StageName>Lost to Competitor</sf:StageName>",
    )
    mapping = StageMapping(values={SourceSystem.SALESFORCE: {"opportunity_status": {"lost": Stage.NURTURE}}})

    (lost,) = _platform().normalize(_outbound(message), mapping).events

    assert lost.changes.stage is Stage.NURTURE
    assert lost.changes.stage_raw == "Lost to Competitor"
    assert lost.changes.status == "lost"


def test_salesforce_reports_a_cleared_field_as_an_empty_string() -> None:
    message = _envelope(
        "Contact",
        '04l5e00000Gx7R2AAJ|<sf:Id>0035e00000PqRsTAAV</sf:Id><sf:Email xsi:nil="true"/>'
        "<sf:OwnerId>0055e000001XyZaAAK</sf:OwnerId>",
    )

    (contact,) = _platform().normalize(_outbound(message), MAPPING).events

    assert contact.object_type is ObjectType.CONTACT
    assert contact.changes.email == ""
    assert contact.changes.stage is None


def test_salesforce_ignores_notifications_about_other_objects() -> None:
    message = _envelope("Account", "04l5e00000Gx7R3AAJ|<sf:Id>0015e00000ZkM3hAAF</sf:Id>")
    assert _platform().normalize(_outbound(message), MAPPING).ignored == 1


def test_salesforce_rejects_a_notification_without_an_id() -> None:
    message = _envelope("Lead", "|<sf:Id>00Q5e00000AbCdEEAV</sf:Id>")
    with pytest.raises(InvalidPayload, match="Notification"):
        _platform().normalize(_outbound(message), MAPPING)


def test_salesforce_rejects_a_body_that_is_not_an_outbound_message() -> None:
    with pytest.raises(InvalidPayload, match="SOAP envelope"):
        _platform().normalize(_outbound(b"<notifications/>"), MAPPING)


def test_salesforce_acknowledges_with_the_soap_ack_salesforce_expects() -> None:
    ack = _platform().acknowledgement()

    assert ack.media_type == "text/xml"
    assert ack.body == (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
        b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
        b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
    )


# JSON callouts: verification


def test_salesforce_accepts_the_documented_callout_signature_vector() -> None:
    _platform().verify(_callout(signature=CALLOUT_SIGNATURE))


def test_salesforce_accepts_an_upper_case_hex_signature() -> None:
    _platform().verify(_callout(signature="sha256=" + CALLOUT_SIGNATURE.removeprefix("sha256=").upper()))


def test_salesforce_rejects_a_callout_signed_with_a_wrong_secret() -> None:
    with pytest.raises(Unauthorized, match="signature mismatch"):
        _platform().verify(_callout(secret="not-the-secret"))


def test_salesforce_rejects_a_tampered_callout_body() -> None:
    delivery = _callout(signature=CALLOUT_SIGNATURE)
    tampered = Delivery(**{**delivery.__dict__, "body": CALLOUT_BODY.replace(b"Working", b"Closed!")})
    with pytest.raises(Unauthorized, match="signature mismatch"):
        _platform().verify(tampered)


def test_salesforce_rejects_a_callout_timestamp_older_than_five_minutes() -> None:
    with pytest.raises(Unauthorized, match="tolerance"):
        _platform().verify(_callout(timestamp=1715000000 - 301))


def test_salesforce_rejects_a_callout_timestamp_more_than_five_minutes_ahead() -> None:
    with pytest.raises(Unauthorized, match="tolerance"):
        _platform().verify(_callout(timestamp=1715000000 + 301))


def test_salesforce_accepts_a_callout_timestamp_at_the_edge_of_the_tolerance() -> None:
    _platform().verify(_callout(timestamp=1715000000 - 300))


@pytest.mark.parametrize("header", ["x-onefunnel-timestamp", "x-onefunnel-signature"])
def test_salesforce_rejects_a_callout_missing_a_signature_header(header: str) -> None:
    delivery = _callout()
    headers = {name: value for name, value in delivery.headers.items() if name != header}
    with pytest.raises(Unauthorized, match="missing"):
        _platform().verify(Delivery(**{**delivery.__dict__, "headers": headers}))


def test_salesforce_rejects_a_callout_signature_of_another_scheme() -> None:
    with pytest.raises(Unauthorized, match="scheme"):
        _platform().verify(_callout(signature=CALLOUT_SIGNATURE.replace("sha256=", "sha1=")))


def test_salesforce_accepts_the_second_callout_secret_during_rotation() -> None:
    _platform(callout_secrets=["old-secret", SECRET]).verify(_callout(signature=CALLOUT_SIGNATURE))


def test_salesforce_rejects_every_callout_when_no_secret_is_configured() -> None:
    with pytest.raises(Unauthorized, match="no callout secret"):
        _platform(callout_secrets=[]).verify(_callout())


# JSON callouts: normalization


def test_salesforce_normalizes_the_documented_callout() -> None:
    (event,) = _platform().normalize(_callout(), MAPPING).events

    assert event.idempotency_key == "00Q5e00000AbCdEEAV:1715000000000"
    assert event.account_id == ORG_ID
    assert event.object_type is ObjectType.LEAD
    assert event.object_id == "00Q5e00000AbCdEEAV"
    assert event.event_type is SourceEventType.CHANGED
    assert event.changes.stage is Stage.SAL
    assert event.changes.status == "Working - Contacted"
    assert event.occurred_at == NOW


def test_salesforce_normalizes_a_callout_merge_with_the_winner_as_the_object() -> None:
    body = _callout_body(
        {
            "eventId": "merge-1",
            "objectType": "Lead",
            "recordId": "00Q5e00000AbCdEEAV",
            "mergedIds": ["00Q5e00000AbCdFEAV"],
        }
    )

    (merged,) = _platform().normalize(_callout(body), MAPPING).events

    assert merged.event_type is SourceEventType.MERGED
    assert merged.object_id == "00Q5e00000AbCdEEAV"
    assert merged.merged_object_ids == ["00Q5e00000AbCdFEAV"]


def test_salesforce_normalizes_a_callout_deletion() -> None:
    body = _callout_body(
        {"eventId": "del-1", "objectType": "Contact", "recordId": "0035e00000PqRsTAAV", "deleted": True}
    )
    (deleted,) = _platform().normalize(_callout(body), MAPPING).events
    assert deleted.event_type is SourceEventType.DELETED


def test_salesforce_uses_is_converted_when_the_lead_status_is_not_mapped() -> None:
    body = _callout_body(
        {
            "eventId": "conv-1",
            "objectType": "Lead",
            "recordId": "00Q5e00000AbCdEEAV",
            "fields": {"Status": "Qualified (custom)", "IsConverted": True},
        }
    )
    mapping = StageMapping(values={SourceSystem.SALESFORCE: {"lead_converted": {"true": Stage.SQL}}})

    (converted,) = _platform().normalize(_callout(body), mapping).events

    assert converted.changes.stage is Stage.SQL
    assert converted.changes.stage_raw == "Qualified (custom)"


def test_salesforce_ignores_callout_events_about_other_objects() -> None:
    body = _callout_body({"eventId": "acc-1", "objectType": "Account", "recordId": "0015e00000ZkM3hAAF"})
    assert _platform().normalize(_callout(body), MAPPING).ignored == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"events": []}', "organizationId"),
        (_callout_body({"objectType": "Lead", "recordId": "00Q5e00000AbCdEEAV"}), "eventId"),
        (_callout_body({"eventId": "e" * 513, "objectType": "Lead", "recordId": "r"}), "longer"),
        (
            _callout_body({"eventId": "e", "objectType": "Lead", "recordId": "r", "fields": {"Status": 3}}),
            "values",
        ),
        (
            _callout_body({"eventId": "e", "objectType": "Lead", "recordId": "r", "mergedIds": [""]}),
            "mergedIds",
        ),
        (
            _callout_body(
                {"eventId": "e", "objectType": "Lead", "recordId": "r", "fields": {"LastModifiedDate": "x"}}
            ),
            "ISO 8601",
        ),
    ],
)
def test_salesforce_rejects_a_malformed_callout(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        _platform().normalize(_callout(body), MAPPING)


def test_a_converted_lead_names_the_contact_and_opportunity_it_became() -> None:
    body = _callout_body(
        {
            "eventId": "evt-convert-1",
            "objectType": "Lead",
            "recordId": "00Q000000000001AAA",
            "fields": {
                "Status": "Closed - Converted",
                "IsConverted": True,
                "ConvertedOpportunityId": "006000000000001AAA",
                "ConvertedContactId": "003000000000001AAA",
            },
        }
    )

    (event,) = _platform().normalize(_callout(body), MAPPING).events

    assert [(link.object_type, link.record_id) for link in event.related] == [
        (ObjectType.OPPORTUNITY, "006000000000001AAA"),
        (ObjectType.CONTACT, "003000000000001AAA"),
    ]
