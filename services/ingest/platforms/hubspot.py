"""HubSpot webhooks: the v3 request signature and the contact events of the Webhooks API.

Signature (https://developers.hubspot.com/docs/api/webhooks/validating-requests; the official SDK
HubSpot/hubspot-api-python `hubspot/utils/signature.py`, vectors in `tests/spec/utils/test_signature.py`):
- v3: `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client secret, method + URI + raw body + timestamp)),
  with `X-HubSpot-Request-Timestamp` in milliseconds; a request older than 5 minutes is rejected. Before
  signing, the URI has only the escapes in `_URI_ESCAPE` decoded.
- v1 / v2 (`X-HubSpot-Signature`, `X-HubSpot-Signature-Version`): hex SHA-256 of secret + body (v1) or of
  secret + method + URI + body (v2). Plain hashes without a timestamp, so a captured request replays
  forever: accepted only when the source is configured for them, and never when a v3 signature is present.

Payload (https://developers.hubspot.com/docs/api/webhooks): a JSON array of up to 100 events. The type is
`subscriptionType` (or `eventType` in older payloads); `eventId` is not unique on its own, so the key is
(portalId, subscriptionId, eventId); `propertyValue` is always a string. Merge fields: changelog
"New subscription types for webhooks"; a merge may create a new record (`newObjectId`) into which both
originals fold: changelog "Updated merge functionality for contacts and companies". Generic `object.*`
types carry `objectTypeId`, "0-1" being contacts: changelog "Public Beta: Generic Webhook Subscriptions".
"""

import base64
import hashlib
import hmac
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec

from onefunnel.ingest.platforms.base import (
    Delivery,
    InvalidPayload,
    Normalized,
    Unauthorized,
    event_id,
    matches_any,
)
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import StageMapping

_TOLERANCE = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The escapes HubSpot decodes before signing; every other escape stays as sent.
_URI_ESCAPE = re.compile("%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)
_ACTIONS = {
    "creation": SourceEventType.CREATED,
    "propertyChange": SourceEventType.CHANGED,
    "merge": SourceEventType.MERGED,
    "deletion": SourceEventType.DELETED,
    "privacyDeletion": SourceEventType.DELETED,
    "restore": SourceEventType.RESTORED,
}
_CONTACT_TYPE_ID = "0-1"
_NO_CHANGES = Changes()  # frozen, so every event without changes can share it
_Id = int | Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class _Event(msgspec.Struct):
    """The fields of a HubSpot event that we read, typed as HubSpot documents them.

    msgspec checks them while it parses, in C, and skips every other field unread.
    """

    subscriptionType: str | None = None
    eventType: str | None = None
    objectTypeId: Any = None
    objectId: _Id | None = None
    propertyName: Any = None
    propertyValue: str | None = None
    changeSource: Any = None
    portalId: _Id | None = None
    subscriptionId: _Id | None = None
    eventId: _Id | None = None
    occurredAt: int | None = None
    primaryObjectId: _Id | None = None
    mergedObjectIds: list[_Id] | None = None
    newObjectId: _Id | None = None


_BATCH = msgspec.json.Decoder(list[_Event])


class HubSpot:
    """Verify and read the webhooks of one HubSpot app."""

    source = SourceSystem.HUBSPOT

    def __init__(self, *, client_secrets: Sequence[str], accept_legacy_signatures: bool = False) -> None:
        self._secrets = [secret.encode() for secret in client_secrets]
        self._accept_legacy = accept_legacy_signatures

    def verify(self, delivery: Delivery) -> None:
        """Raise Unauthorized unless a client secret signed this request within the last 5 minutes."""
        if not self._secrets:
            raise Unauthorized("no HubSpot client secret configured")
        signature = delivery.headers.get("x-hubspot-signature-v3")
        if signature is not None:
            self._verify_v3(delivery, signature)
        elif self._accept_legacy and "x-hubspot-signature" in delivery.headers:
            self._verify_legacy(delivery, delivery.headers["x-hubspot-signature"])
        else:
            raise Unauthorized("missing X-HubSpot-Signature-v3 header")

    def normalize(self, delivery: Delivery, mapping: StageMapping) -> Normalized:
        """Turn a batch of HubSpot events into contact events; other objects and properties are ignored."""
        try:
            batch = _BATCH.decode(delivery.body)
        except msgspec.ValidationError as error:  # says where, never a value: `... - at `$[3].objectId``
            raise InvalidPayload(f"body is not a JSON array of HubSpot events: {error}") from None
        except (msgspec.DecodeError, RecursionError):
            raise InvalidPayload("body is not JSON") from None
        events = [
            _event(raw, index=index, delivery=delivery, mapping=mapping) for index, raw in enumerate(batch)
        ]
        used = [event for event in events if event is not None]
        return Normalized(events=used, ignored=len(events) - len(used))

    def acknowledgement(self) -> None:
        """HubSpot only needs a 2xx."""
        return None

    def _verify_v3(self, delivery: Delivery, signature: str) -> None:
        timestamp = delivery.headers.get("x-hubspot-request-timestamp")
        if timestamp is None:
            raise Unauthorized("missing X-HubSpot-Request-Timestamp header")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 20):
            raise Unauthorized("malformed X-HubSpot-Request-Timestamp header")
        now_ms = (delivery.received_at - _EPOCH) // timedelta(milliseconds=1)
        # HubSpot only bounds the past; a far-future timestamp would let a captured request live longer.
        if abs(now_ms - int(timestamp)) > _TOLERANCE // timedelta(milliseconds=1):
            raise Unauthorized("X-HubSpot-Request-Timestamp is more than 5 minutes from now")
        uri = _URI_ESCAPE.sub(lambda escape: chr(int(escape.group(1), 16)), delivery.url)
        message = delivery.method.encode() + uri.encode() + delivery.body + timestamp.encode()
        expected = [
            base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()) for key in self._secrets
        ]
        if not matches_any(signature.encode(), expected):
            raise Unauthorized("X-HubSpot-Signature-v3 does not match")

    def _verify_legacy(self, delivery: Delivery, signature: str) -> None:
        version = delivery.headers.get("x-hubspot-signature-version")
        if version == "v1":
            signed = delivery.body
        elif version == "v2":
            signed = delivery.method.encode() + delivery.url.encode() + delivery.body
        else:
            raise Unauthorized("unsupported X-HubSpot-Signature-Version")
        expected = [hashlib.sha256(key + signed).hexdigest().encode() for key in self._secrets]
        if not matches_any(signature.encode(), expected):
            raise Unauthorized(f"X-HubSpot-Signature ({version}) does not match")


def _event(raw: _Event, *, index: int, delivery: Delivery, mapping: StageMapping) -> SourceEvent | None:
    """One HubSpot event as a contact event, or None when it is not one we use."""
    kind = raw.subscriptionType or raw.eventType
    if kind is None:
        raise InvalidPayload(f"event {index} has no subscriptionType")
    object_name, _, action = kind.partition(".")
    is_contact = object_name == "contact" or (
        object_name == "object" and raw.objectTypeId == _CONTACT_TYPE_ID
    )
    event_type = _ACTIONS.get(action)
    if not is_contact or event_type is None:
        return None
    changes = _NO_CHANGES
    if event_type is SourceEventType.CHANGED:
        # An empty (or absent) value means the property was cleared.
        tracked = _changes(raw.propertyName, raw.propertyValue or "", index=index, mapping=mapping)
        if tracked is None:
            return None
        changes = tracked
    if event_type is SourceEventType.MERGED:
        object_id, merged = _merge_ids(raw, index=index)
    else:
        object_id, merged = _id(raw.objectId, "objectId", index=index), []
    portal_id = _id(raw.portalId, "portalId", index=index)
    subscription_id = _id(raw.subscriptionId, "subscriptionId", index=index)
    key = f"{portal_id}:{subscription_id}:{_id(raw.eventId, 'eventId', index=index)}"
    change_source = raw.changeSource
    return SourceEvent(
        id=event_id(SourceSystem.HUBSPOT, key),
        idempotency_key=key,
        source=SourceSystem.HUBSPOT,
        account_id=portal_id,
        object_type=ObjectType.CONTACT,
        object_id=object_id,
        event_type=event_type,
        changes=changes,
        merged_object_ids=merged,
        change_source=change_source if isinstance(change_source, str) else None,
        occurred_at=_occurred_at(raw.occurredAt, index=index, default=delivery.received_at),
        received_at=delivery.received_at,
    )


def _changes(name: Any, value: str, *, index: int, mapping: StageMapping) -> Changes | None:
    """The canonical change a contact property reports, or None for a property we do not track."""
    match name:
        case "lifecyclestage":
            stage = mapping.to_canonical(SourceSystem.HUBSPOT, "lifecyclestage", value)
            return Changes(stage=stage, stage_raw=value)
        case "hs_lead_status":
            return Changes(status=value)
        case "hubspot_owner_id":
            return Changes(owner_id=value)
        case "email":
            return Changes(email=value)
        case "hs_analytics_source":  # HubSpot's "Original Source" property
            return Changes(lead_source=value)
        case "utm_campaign":  # the portal's campaign property (docs/platforms/hubspot.md)
            return Changes(campaign=value)
        case "hubspotscore" if value:
            try:
                score = float(value)
            except ValueError:
                raise InvalidPayload(f"event {index}: hubspotscore is not a number") from None
            if not math.isfinite(score):
                raise InvalidPayload(f"event {index}: hubspotscore is not a finite number")
            return Changes(score=score)
    # Includes a cleared hubspotscore: Changes has no way to say "score cleared".
    return None


def _merge_ids(raw: _Event, *, index: int) -> tuple[str, list[str]]:
    """The surviving contact and the ones folded into it."""
    primary = _id(raw.primaryObjectId, "primaryObjectId", index=index)
    merged = raw.mergedObjectIds
    if merged is None:
        raise InvalidPayload(f"event {index}: mergedObjectIds is missing")
    new = raw.newObjectId
    # When a merge creates a new record, the primary is folded into it as well.
    winner = primary if new is None else _id(new, "newObjectId", index=index)
    candidates = [primary, *(_id(value, "mergedObjectIds", index=index) for value in merged)]
    losers = [loser for loser in dict.fromkeys(candidates) if loser != winner]
    if not losers:
        raise InvalidPayload(f"event {index}: merge names no merged contacts")
    return winner, losers


def _id(value: int | str | None, field: str, *, index: int) -> str:
    """An id as text; its type and length were checked while parsing."""
    if value is None:
        raise InvalidPayload(f"event {index}: {field} is missing")
    return value if isinstance(value, str) else str(value)


def _occurred_at(value: int | None, *, index: int, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError:
        raise InvalidPayload(f"event {index}: occurredAt is out of range") from None
