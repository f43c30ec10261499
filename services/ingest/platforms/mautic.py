"""Mautic webhooks: an HMAC of the raw body, and the contact events of the Lead bundle.

Signature (mautic/mautic `app/bundles/WebhookBundle/Http/Client.php`; mautic/developer-documentation
`source/includes/_webhooks.md`): `Webhook-Signature` = base64(HMAC-SHA256(secret, raw body)). There is no
timestamp or nonce, so a captured delivery replays; the deterministic idempotency key lets the bus
consumers drop the copy.

Payload (`app/bundles/WebhookBundle/Model/WebhookModel.php`, `getWebhookPayload`): a JSON object keyed by
event type, each key holding a list of entries; queue mode puts several types and up to `webhook_limit`
entries in one request. Every entry gets `"timestamp"` = the queue row's `dateAdded->format('c')`, ISO-8601
with an offset. Contact entries (`app/bundles/LeadBundle/EventListener/WebhookSubscriber.php` and
`Assets/WebhookPayload/lead_*.json`) carry `contact` with `id`, `points`, `stage` (null or an object with
`name`), `owner.id`, `dateModified` and field values at `fields.<group>.<alias>.value`; a points change adds
`points.new_points`; a deleted contact is serialized after removal, so its id is the entry's top-level
`id` and `contact.id` is null. A merge arrives as an update of the winner and a delete of the loser
(`app/bundles/LeadBundle/Deduplicate/ContactMerger.php`). "Send Test Payload"
(`app/bundles/WebhookBundle/Controller/AjaxController.php`) posts the sample files nested under their
keys plus a top-level `"timestamp"`, which no real delivery has.
"""

import base64
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from onefunnel.ingest.platforms.base import (
    Delivery,
    InvalidPayload,
    Normalized,
    Unauthorized,
    aware_instant,
    delivery_hash,
    event_id,
    matches_any,
)
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import StageMapping

_EVENT_TYPES = {
    "mautic.lead_post_save_new": SourceEventType.CREATED,
    "mautic.lead_post_save_update": SourceEventType.CHANGED,
    "mautic.lead_points_change": SourceEventType.CHANGED,
    "mautic.lead_post_delete": SourceEventType.DELETED,
}
_TEST_PAYLOAD_KEY = "timestamp"


class Mautic:
    """Verify and read the webhooks of one Mautic instance."""

    source = SourceSystem.MAUTIC

    def __init__(self, *, secrets: Sequence[str]) -> None:
        if not all(secrets):
            # Anyone can compute an HMAC under an empty key.
            raise ValueError("a Mautic webhook secret is empty")
        self._secrets = [secret.encode() for secret in secrets]

    def verify(self, delivery: Delivery) -> None:
        """Raise Unauthorized unless one of the secrets signed the raw body."""
        if not self._secrets:
            raise Unauthorized("no Mautic webhook secret configured")
        signature = delivery.headers.get("webhook-signature")
        if not signature:
            raise Unauthorized("missing Webhook-Signature header")
        expected = [base64.b64encode(hmac.digest(key, delivery.body, "sha256")) for key in self._secrets]
        if not matches_any(signature.encode(), expected):
            raise Unauthorized("Webhook-Signature does not match")

    def normalize(self, delivery: Delivery, mapping: StageMapping) -> Normalized:
        """Turn the contact events of a delivery into source events; other event types are ignored."""
        try:
            payload = json.loads(delivery.body)
        except (ValueError, RecursionError):
            raise InvalidPayload("body is not JSON") from None
        if not isinstance(payload, dict):
            raise InvalidPayload("body is not a JSON object of event types")
        if _TEST_PAYLOAD_KEY in payload:
            # The test button sends Mautic's sample contact; acknowledge it without publishing it.
            return Normalized(ignored=len(payload) - 1)
        events: list[SourceEvent] = []
        ignored = 0
        for key, entries in payload.items():
            if not isinstance(entries, list):
                raise InvalidPayload("an event type does not hold a list of events")
            event_type = _EVENT_TYPES.get(key)
            if event_type is None:
                ignored += len(entries)
                continue
            for entry in entries:
                events.append(
                    _event(entry, key=key, event_type=event_type, delivery=delivery, mapping=mapping)
                )
        return Normalized(events=events, ignored=ignored)

    def acknowledgement(self) -> None:
        """Mautic only needs a 2xx."""
        return None


def _event(
    entry: Any, *, key: str, event_type: SourceEventType, delivery: Delivery, mapping: StageMapping
) -> SourceEvent:
    if not isinstance(entry, dict):
        raise InvalidPayload("an event is not a JSON object")
    contact = entry.get("contact")
    if not isinstance(contact, dict):
        raise InvalidPayload("an event has no contact object")
    deleted = event_type is SourceEventType.DELETED
    object_id = _record_id(entry.get("id") if deleted else contact.get("id"))
    timestamp = entry.get("timestamp")
    if not isinstance(timestamp, str):
        raise InvalidPayload("an event has no timestamp")
    modified = contact.get("dateModified")
    idempotency_key = delivery_hash(key, object_id, timestamp, modified if isinstance(modified, str) else "")
    return SourceEvent(
        id=event_id(SourceSystem.MAUTIC, idempotency_key),
        idempotency_key=idempotency_key,
        source=SourceSystem.MAUTIC,
        object_type=ObjectType.CONTACT,
        object_id=object_id,
        event_type=event_type,
        changes=Changes() if deleted else _changes(contact, points=entry.get("points"), mapping=mapping),
        # PHP's format('c') always writes the offset; a value without one did not come from Mautic.
        occurred_at=aware_instant(timestamp, error="an event timestamp is not ISO-8601 with a UTC offset"),
        received_at=delivery.received_at,
    )


def _changes(contact: Mapping[str, Any], *, points: Any, mapping: StageMapping) -> Changes:
    stage = contact.get("stage")
    stage_name = stage.get("name") if isinstance(stage, dict) else None
    # A null stage means the contact has none; a snapshot cannot tell that from a removal, so it is not
    # reported as a change.
    if not isinstance(stage_name, str) or not stage_name:
        stage_name = None
    canonical = mapping.to_canonical(SourceSystem.MAUTIC, "stage_name", stage_name) if stage_name else None
    score = _number(points.get("new_points")) if isinstance(points, dict) else None
    owner = contact.get("owner")
    return Changes(
        stage=canonical,
        stage_raw=stage_name,
        score=_number(contact.get("points")) if score is None else score,
        owner_id=_optional_id(owner.get("id")) if isinstance(owner, dict) else None,
        email=_field_value(contact.get("fields"), "email"),
    )


def _field_value(fields: Any, alias: str) -> str | None:
    # Empty groups are serialized by PHP as [] rather than {}.
    groups = fields.values() if isinstance(fields, dict) else []
    for group in groups:
        field = group.get(alias) if isinstance(group, dict) else None
        if isinstance(field, dict):
            value = field.get("value")
            return value if isinstance(value, str) and value else None
    return None


def _record_id(value: Any) -> str:
    record_id = _optional_id(value)
    if record_id is None:
        raise InvalidPayload("an event has no record id")
    return record_id


def _optional_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
