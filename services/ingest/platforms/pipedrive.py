"""Pipedrive webhooks, v2 and v1, authenticated by HTTP Basic auth.

Sources:
- No signature; the webhook's `http_auth_user`/`http_auth_password` are sent as HTTP Basic auth on
  every request (pipedrive/client-nodejs `src/versions/v1/models/add-webhook-request.ts`;
  https://pipedrive.readme.io/docs/guide-for-webhooks-v2).
- v2 body `{"meta": {...}, "data": {...}|null, "previous": {...}|null}`: `meta.action` is
  create/change/delete, `meta.entity` the object, `meta.entity_id` its id, `meta.id` the event id,
  `meta.timestamp` an ISO string or a 10-digit epoch, `meta.change_source` app/api, `meta.company_id`
  the account; `data` is null on delete and `previous` holds only the changed fields' old values
  (https://pipedrive.readme.io/docs/guide-for-webhooks-v2).
- A merge sends the loser's `delete` with `meta.merged_to_id` and the winner's `change` with
  `meta.merged_from_id` (https://pipedrive.readme.io/docs/webhooks-v2-migration-guide).
- v1 body `{"v": 1, "meta": {"action": "added|updated|deleted|merged", "object": ..., "id": ...,
  "timestamp": <epoch s>, "timestamp_micro": ...}, "current": ..., "previous": ..., "retry": n}`
  (https://pipedrive.readme.io/docs/guide-for-webhooks). v1 `meta.id` is the object's id, not an
  event id, so v1 events are keyed by a hash of what stays the same across retries.
"""

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from onefunnel.ingest.platforms.base import (
    Acknowledgement,
    Delivery,
    InvalidPayload,
    Normalized,
    Unauthorized,
    delivery_hash,
    event_id,
    matches_any,
)
from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import StageMapping

_SOURCE = SourceSystem.PIPEDRIVE
_MAX_KEY_LENGTH = 512  # SourceEvent.idempotency_key
_OBJECT_TYPES = {"person": ObjectType.PERSON, "deal": ObjectType.DEAL, "lead": ObjectType.LEAD}
# The fields each object reports; a change that touched none of them is ignored.
_TRACKED = {
    ObjectType.PERSON: ("emails", "email", "owner_id"),
    ObjectType.DEAL: ("status", "stage_id", "owner_id", "user_id"),
    ObjectType.LEAD: ("owner_id",),
}
_V1_ACTIONS = {"added": "create", "updated": "change", "deleted": "delete", "merged": "merge"}


class Pipedrive:
    source = _SOURCE

    def __init__(self, *, credentials: Sequence[str]) -> None:
        if not all(":" in pair for pair in credentials):
            raise ValueError("each credential must be 'user:password'")
        self._credentials = tuple(pair.encode() for pair in credentials)

    def verify(self, delivery: Delivery) -> None:
        """Require HTTP Basic credentials matching one configured user:password pair."""
        if not self._credentials:
            raise Unauthorized("no Basic auth credentials are configured")
        header = delivery.headers.get("authorization")
        if header is None:
            raise Unauthorized("missing Authorization header")
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized("Authorization is not Basic")
        try:
            presented = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Unauthorized("malformed Basic credentials") from None
        if not matches_any(presented, self._credentials):
            raise Unauthorized("Basic credentials mismatch")

    def normalize(self, delivery: Delivery, mapping: StageMapping) -> Normalized:
        """Turn a person, deal or lead webhook into one event; other objects are ignored."""
        webhook = _read(delivery.body)
        object_type = _OBJECT_TYPES.get(webhook.entity)
        if object_type is None:
            return Normalized(ignored=1)
        meta, action = webhook.meta, webhook.action
        object_id = webhook.entity_id
        merged_ids: list[str] = []
        merged_to, merged_from = _id(meta.get("merged_to_id")), _id(meta.get("merged_from_id"))
        if action == "delete" and merged_to:
            # The loser's delete: the merge itself, told from the winner's side.
            event_type, object_id, merged_ids = SourceEventType.MERGED, merged_to, [webhook.entity_id]
        elif action == "change" and merged_from:
            # The winner's change: the same merge again, so either webhook alone records it.
            event_type, merged_ids = SourceEventType.MERGED, [merged_from]
        elif action == "delete":
            event_type = SourceEventType.DELETED
        elif action == "create":
            event_type = SourceEventType.CREATED
        elif action == "change" and not _touches(webhook.previous, webhook.current, _TRACKED[object_type]):
            return Normalized(ignored=1)
        else:
            # A v1 `merged` names only the surviving record; the loser's `deleted` follows it.
            event_type = SourceEventType.CHANGED
        event = SourceEvent(
            id=event_id(_SOURCE, webhook.key),
            idempotency_key=webhook.key,
            source=_SOURCE,
            account_id=_id(meta.get("company_id")),
            object_type=object_type,
            object_id=object_id,
            event_type=event_type,
            changes=_changes(object_type, webhook.current or {}, mapping),
            merged_object_ids=merged_ids,
            change_source=_text(meta.get("change_source")),
            occurred_at=_timestamp(meta.get("timestamp")) or delivery.received_at,
            received_at=delivery.received_at,
        )
        return Normalized(events=[event])

    def acknowledgement(self) -> Acknowledgement | None:
        return None  # any 2xx will do


@dataclass(frozen=True)
class _Webhook:
    """One v1 or v2 webhook in version-neutral terms (v2 action names)."""

    action: str  # create, change, delete, or merge (v1 only)
    entity: str
    entity_id: str
    key: str
    meta: Mapping[str, Any]
    current: Mapping[str, Any] | None
    previous: Mapping[str, Any] | None


def _read(body: bytes) -> _Webhook:
    try:
        payload = json.loads(body)
    except ValueError:
        raise InvalidPayload("body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("meta"), dict):
        raise InvalidPayload("body is not an object with a meta object")
    meta: dict[str, Any] = payload["meta"]
    version1 = payload.get("v") == 1
    entity = meta.get("object" if version1 else "entity")
    action = _V1_ACTIONS.get(str(meta.get("action"))) if version1 else meta.get("action")
    if not isinstance(entity, str) or action not in ("create", "change", "delete", "merge"):
        raise InvalidPayload("meta lacks a known action or an entity")
    entity_id = _id(meta.get("id" if version1 else "entity_id"))
    if entity_id is None:
        raise InvalidPayload("meta lacks the entity id")
    key = _v1_key(meta, action, entity_id) if version1 else _id(meta.get("id"))
    if key is None or len(key) > _MAX_KEY_LENGTH:
        raise InvalidPayload("meta lacks the event id, or it is too long")
    return _Webhook(
        action=action,
        entity=entity,
        entity_id=entity_id,
        key=key,
        meta=meta,
        current=_object(payload.get("current" if version1 else "data")),
        previous=_object(payload.get("previous")),
    )


def _changes(object_type: ObjectType, record: Mapping[str, Any], mapping: StageMapping) -> Changes:
    owner_id = _id(record.get("owner_id"))
    if object_type is ObjectType.PERSON:
        return Changes(owner_id=owner_id, email=_primary_email(record.get("emails", record.get("email"))))
    if object_type is ObjectType.DEAL:
        # Deal status (open/won/lost) is the stage; the per-pipeline stage id has no canonical
        # name, so it travels as `status` for reports and future mappings.
        status = record.get("status")
        stage_raw = status if isinstance(status, str) else None
        return Changes(
            stage=mapping.to_canonical(_SOURCE, "deal_status", stage_raw) if stage_raw else None,
            stage_raw=stage_raw,
            status=_id(record.get("stage_id")),
            owner_id=owner_id or _id(_v1_deal_owner(record)),
        )
    return Changes(owner_id=owner_id)


def _v1_deal_owner(record: Mapping[str, Any]) -> object:
    # v1 deals name their owner `user_id`, sometimes expanded to an object with an `id`.
    owner = record.get("user_id")
    return owner.get("id") if isinstance(owner, dict) else owner


def _touches(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any] | None, fields: Sequence[str]
) -> bool:
    if previous is None:
        return True  # nothing to compare with: report it
    current = current or {}
    return any(name in previous and previous[name] != current.get(name) for name in fields)


def _primary_email(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return None
    entries = [entry for entry in value if isinstance(entry, dict) and isinstance(entry.get("value"), str)]
    primary = [entry for entry in entries if entry.get("primary")] or entries
    email: str | None = primary[0]["value"] if primary else None
    return email


def _v1_key(meta: Mapping[str, Any], action: str, entity_id: str) -> str:
    # Everything but the top-level `retry`, which changes between attempts of the same event.
    moment = meta.get("timestamp_micro", meta.get("timestamp", ""))
    key: str = delivery_hash("v1", str(meta.get("object")), action, entity_id, str(moment))
    return key


def _timestamp(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidPayload("meta.timestamp is out of range") from None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidPayload("meta.timestamp is neither an epoch nor an ISO 8601 date-time") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # Pipedrive times are UTC
    raise InvalidPayload("meta.timestamp is neither an epoch nor an ISO 8601 date-time")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _object(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value):
        return str(value)
    return None
