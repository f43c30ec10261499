"""Salesforce: Outbound Messages (SOAP, `text/xml`) and signed Flow/Apex callouts (`application/json`).

Both arrive on one endpoint and are told apart by Content-Type.

Outbound Messages carry no signature (SOAP API Developer Guide, "Considerations for Security",
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_security.htm):
we accept only configured `OrganizationId`s and, when tokens are configured, require one as the
`token` query parameter of the endpoint URL. Envelope, ids and ack: see `salesforce_outbound`.

Callouts are our own contract (docs/platforms/salesforce.md), shaped so Apex can sign them with
`Crypto.generateMac('hmacSHA256', Blob.valueOf(ts + '.' + body), Blob.valueOf(secret))` and
`EncodingUtil.convertToHex` (Apex Reference Guide, Crypto and EncodingUtil classes,
https://developer.salesforce.com/docs/atlas.en-us.apexcode.meta/apexcode/apex_classes_restful_crypto.htm):
`X-Onefunnel-Signature: sha256=<hex HMAC-SHA256(secret, f"{ts}.{raw body}")>` and
`X-Onefunnel-Timestamp: <unix seconds>`, within 5 minutes of receipt.

Field meanings (Lead.Status, Opportunity.StageName/IsClosed/IsWon, LastModifiedDate) follow the
SOAP API object reference; `LastModifiedById` is reported as `change_source` so sync can recognise
its own integration user's writes.
"""

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from onefunnel.ingest.platforms.base import (
    Acknowledgement,
    Delivery,
    InvalidPayload,
    Normalized,
    Unauthorized,
    aware_instant,
    event_id,
    matches_any,
)
from onefunnel.ingest.platforms.salesforce_outbound import (
    ACKNOWLEDGEMENT,
    is_salesforce_id,
    parse_outbound_message,
    same_organization,
)
from onefunnel.shared.events import (
    Changes,
    ObjectType,
    RecordLink,
    SourceEvent,
    SourceEventType,
    SourceSystem,
)
from onefunnel.shared.stage_mapping import StageMapping
from onefunnel.shared.stages import Stage

TOLERANCE = timedelta(minutes=5)
_OBJECT_TYPES = {
    "Lead": ObjectType.LEAD,
    "Contact": ObjectType.CONTACT,
    "Opportunity": ObjectType.OPPORTUNITY,
}
_SOURCE = SourceSystem.SALESFORCE
_MAX_KEY_LENGTH = 512  # SourceEvent.idempotency_key


@dataclass(frozen=True)
class _Record:
    """One record change, from an Outbound Message notification or a callout event."""

    key: str
    object_type: str
    record_id: str
    fields: Mapping[str, str]  # Salesforce API field names; a cleared field is ""
    deleted: bool = False
    merged_ids: tuple[str, ...] = ()


class Salesforce:
    source = _SOURCE

    def __init__(
        self,
        *,
        org_ids: Sequence[str],
        outbound_tokens: Sequence[str] = (),
        callout_secrets: Sequence[str] = (),
    ) -> None:
        if not all(is_salesforce_id(org_id) for org_id in org_ids):
            raise ValueError("org_ids must be 15- or 18-character Salesforce ids")
        self._org_ids = tuple(org_ids)
        self._outbound_tokens = tuple(token.encode() for token in outbound_tokens)
        self._callout_secrets = tuple(secret.encode() for secret in callout_secrets)

    def verify(self, delivery: Delivery) -> None:
        """Check an Outbound Message's token and organization, or a callout's HMAC and timestamp."""
        if _kind(delivery) == "outbound":
            self._verify_outbound(delivery)
        else:
            self._verify_callout(delivery)

    def normalize(self, delivery: Delivery, mapping: StageMapping) -> Normalized:
        """Turn each notification or callout event about a Lead, Contact or Opportunity into an event."""
        if _kind(delivery) == "outbound":
            message = parse_outbound_message(delivery.body)
            account_id = message.organization_id
            records = [
                _Record(key=n.id, object_type=n.object_type, record_id=n.fields["Id"], fields=n.fields)
                for n in message.notifications
            ]
        else:
            account_id, records = _parse_callout(delivery.body)
        return _normalized(records, account_id=account_id, delivery=delivery, mapping=mapping)

    def acknowledgement(self) -> Acknowledgement:
        # Outbound Messages are retried until this exact SOAP ack arrives; callouts only read the
        # status code, so the same body serves both (see docs/platforms/salesforce.md).
        return ACKNOWLEDGEMENT

    def _verify_outbound(self, delivery: Delivery) -> None:
        if not self._org_ids:
            raise Unauthorized("no Salesforce organization is configured")
        if self._outbound_tokens:
            token = delivery.query.get("token")
            if token is None:
                raise Unauthorized("missing token query parameter")
            if not matches_any(token.encode(), self._outbound_tokens):
                raise Unauthorized("token mismatch")
        try:
            organization_id = parse_outbound_message(delivery.body).organization_id
        except InvalidPayload:
            raise Unauthorized("no readable OrganizationId") from None
        if not any(same_organization(org_id, organization_id) for org_id in self._org_ids):
            raise Unauthorized("OrganizationId is not a configured organization")

    def _verify_callout(self, delivery: Delivery) -> None:
        if not self._callout_secrets:
            raise Unauthorized("no callout secret is configured")
        timestamp = delivery.headers.get("x-onefunnel-timestamp")
        signature = delivery.headers.get("x-onefunnel-signature")
        if timestamp is None or signature is None:
            raise Unauthorized("missing X-Onefunnel-Timestamp or X-Onefunnel-Signature header")
        if not timestamp.isascii() or not timestamp.isdigit():
            raise Unauthorized("malformed X-Onefunnel-Timestamp")
        if abs(delivery.received_at.timestamp() - int(timestamp)) > TOLERANCE.total_seconds():
            raise Unauthorized("timestamp outside the 5-minute tolerance")
        scheme, _, presented = signature.partition("=")
        if scheme != "sha256":
            raise Unauthorized("signature scheme is not sha256")
        signed = timestamp.encode() + b"." + delivery.body
        expected = [
            hmac.new(secret, signed, hashlib.sha256).hexdigest().encode() for secret in self._callout_secrets
        ]
        # Apex's EncodingUtil.convertToHex writes lower case; accept either case from other callers.
        if not matches_any(presented.lower().encode(), expected):
            raise Unauthorized("signature mismatch")


def _kind(delivery: Delivery) -> str:
    media_type = delivery.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "text/xml":
        return "outbound"
    if media_type == "application/json":
        return "callout"
    raise Unauthorized("Content-Type is neither text/xml nor application/json")


def _parse_callout(body: bytes) -> tuple[str, list[_Record]]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise InvalidPayload("callout body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise InvalidPayload("callout body is not an object with an events list")
    organization_id = payload.get("organizationId")
    if not isinstance(organization_id, str) or not is_salesforce_id(organization_id):
        raise InvalidPayload("callout organizationId is missing or not a Salesforce id")
    return organization_id, [_callout_record(item) for item in payload["events"]]


def _callout_record(item: object) -> _Record:
    if not isinstance(item, dict):
        raise InvalidPayload("a callout event is not an object")
    key, object_type, record_id = item.get("eventId"), item.get("objectType"), item.get("recordId")
    if not (isinstance(key, str) and isinstance(object_type, str) and isinstance(record_id, str)):
        raise InvalidPayload("a callout event lacks eventId, objectType or recordId")
    if not (key and object_type and record_id):
        raise InvalidPayload("a callout event has an empty eventId, objectType or recordId")
    if len(key) > _MAX_KEY_LENGTH:
        raise InvalidPayload(f"a callout eventId is longer than {_MAX_KEY_LENGTH} characters")
    fields, deleted = item.get("fields", {}), item.get("deleted", False)
    merged_ids = item.get("mergedIds", [])
    if not isinstance(fields, dict) or not isinstance(deleted, bool) or not isinstance(merged_ids, list):
        raise InvalidPayload("a callout event has malformed fields, mergedIds or deleted")
    if not all(isinstance(merged_id, str) and merged_id for merged_id in merged_ids):
        raise InvalidPayload("callout mergedIds must be record ids")
    return _Record(
        key=key,
        object_type=object_type,
        record_id=record_id,
        fields={name: _field_text(value) for name, value in fields.items()},
        deleted=deleted,
        merged_ids=tuple(merged_ids),
    )


def _field_text(value: object) -> str:
    # The text an Outbound Message would carry for the same field, so both kinds share one reader.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    raise InvalidPayload("callout field values must be strings, booleans or null")


def _normalized(
    records: Sequence[_Record], *, account_id: str, delivery: Delivery, mapping: StageMapping
) -> Normalized:
    events = []
    for record in records:
        object_type = _OBJECT_TYPES.get(record.object_type)
        if object_type is None:
            continue
        event_type = SourceEventType.CHANGED
        if record.merged_ids:
            event_type = SourceEventType.MERGED
        elif record.deleted:
            event_type = SourceEventType.DELETED
        events.append(
            SourceEvent(
                id=event_id(_SOURCE, record.key),
                idempotency_key=record.key,
                source=_SOURCE,
                account_id=account_id,
                object_type=object_type,
                object_id=record.record_id,
                event_type=event_type,
                changes=_changes(object_type, record.fields, mapping),
                merged_object_ids=list(record.merged_ids),
                related=_converted_records(record.fields),
                change_source=record.fields.get("LastModifiedById") or None,
                occurred_at=_occurred_at(record.fields) or delivery.received_at,
                received_at=delivery.received_at,
            )
        )
    return Normalized(events=events, ignored=len(records) - len(events))


def _converted_records(fields: Mapping[str, str]) -> list[RecordLink]:
    """A converted lead lives on as a contact and an opportunity: the same person in the CRM."""
    related = [
        RecordLink(system=_SOURCE, object_type=object_type, record_id=fields[name])
        for name, object_type in (
            ("ConvertedOpportunityId", ObjectType.OPPORTUNITY),
            ("ConvertedContactId", ObjectType.CONTACT),
        )
        if fields.get(name)
    ]
    return related


def _changes(object_type: ObjectType, fields: Mapping[str, str], mapping: StageMapping) -> Changes:
    stage_raw = status = None
    stage = None
    if object_type is ObjectType.LEAD:
        stage_raw = status = fields.get("Status")
        stage = _stage(mapping, "lead_status", stage_raw)
        if stage is None and fields.get("IsConverted") == "true":
            # A converted lead whose (custom) status the funnel does not name still left the lead stage.
            stage = _stage(mapping, "lead_converted", "true")
    elif object_type is ObjectType.OPPORTUNITY:
        stage_raw = fields.get("StageName")
        status = _opportunity_status(fields)
        stage = _stage(mapping, "opportunity_stage", stage_raw)
        if stage is None:
            # IsClosed/IsWon settle the outcome even when the org's own StageName is not mapped.
            stage = _stage(mapping, "opportunity_status", status)
    return Changes(
        stage=stage,
        stage_raw=stage_raw,
        status=status,
        owner_id=fields.get("OwnerId"),
        email=fields.get("Email"),
        campaign=fields.get("CampaignId"),
        lead_source=fields.get("LeadSource"),
    )


def _stage(mapping: StageMapping, field: str, value: str | None) -> Stage | None:
    return None if not value else mapping.to_canonical(_SOURCE, field, value)


def _opportunity_status(fields: Mapping[str, str]) -> str | None:
    if "IsClosed" not in fields:
        return None
    if fields["IsClosed"] != "true":
        return "open"
    return "won" if fields.get("IsWon") == "true" else "lost"


def _occurred_at(fields: Mapping[str, str]) -> datetime | None:
    value = fields.get("LastModifiedDate") or fields.get("SystemModstamp")
    if not value:
        return None
    return aware_instant(value, error="LastModifiedDate is not an ISO 8601 date-time with a time zone")
