"""Generic sources: any system that signs by the Standard Webhooks spec and sends our contact event shape.

Signature (standard-webhooks/standard-webhooks `spec/standard-webhooks.md`, sections "Signature scheme",
"Webhook headers" and "Verifying signatures"; reference library
`libraries/python/standardwebhooks/webhooks.py`):
- headers `webhook-id`, `webhook-timestamp` (integer Unix seconds) and `webhook-signature`, a space-separated
  list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; a sender rotating its secret signs
  with both and lists both;
- the key is the base64 after the `whsec_` prefix of the secret;
- the timestamp must be within 5 minutes of now, in either direction; `webhook-id` is the idempotency key.
Asymmetric `v1a` (ed25519) signatures are skipped. Written here rather than with the `standardwebhooks`
package because that verifier reads the clock itself (we verify against `received_at`), holds one secret
per instance, and lets a malformed signature entry escape as a bare ValueError.

Body: our own shape, one event per delivery, field for field a SourceEvent (docs/platforms/generic.md).
"""

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

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
from onefunnel.shared.stages import Stage

_TOLERANCE = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY_PREFIX = "whsec_"
_TYPES = {
    "contact.created": SourceEventType.CREATED,
    "contact.changed": SourceEventType.CHANGED,
    "contact.merged": SourceEventType.MERGED,
    "contact.deleted": SourceEventType.DELETED,
    "contact.restored": SourceEventType.RESTORED,
}


class _Changes(BaseModel):
    # Unknown keys are refused so that a misspelt field fails loudly instead of being dropped.
    model_config = ConfigDict(strict=True, extra="forbid")

    stage: str | None = None
    status: str | None = None
    score: float | None = Field(default=None, allow_inf_nan=False)
    owner_id: str | None = None
    email: str | None = None
    campaign: str | None = None
    lead_source: str | None = None


class _Event(BaseModel):
    model_config = ConfigDict(strict=True)

    type: str
    object_type: Literal["contact"]
    object_id: str = Field(min_length=1)
    occurred_at: AwareDatetime
    changes: _Changes = Field(default_factory=_Changes)
    merged_object_ids: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)


class StandardWebhooks:
    """Verify and read the webhooks of one generic source."""

    source = SourceSystem.GENERIC

    def __init__(self, *, secrets: Sequence[str]) -> None:
        self._keys = [_signing_key(secret) for secret in secrets]

    def verify(self, delivery: Delivery) -> None:
        """Raise Unauthorized unless one of our secrets signed this delivery within 5 minutes of now."""
        if not self._keys:
            raise Unauthorized("no signing secret configured")
        message_id = _header(delivery, "webhook-id")
        timestamp = _header(delivery, "webhook-timestamp")
        signatures = _header(delivery, "webhook-signature")
        # A "." in the id would make "{id}.{timestamp}.{body}" ambiguous (spec, "Signature scheme").
        if "." in message_id:
            raise Unauthorized("malformed webhook-id header")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise Unauthorized("malformed webhook-timestamp header")
        now = (delivery.received_at - _EPOCH) / timedelta(seconds=1)
        if abs(now - int(timestamp)) > _TOLERANCE.total_seconds():
            raise Unauthorized("webhook-timestamp is more than 5 minutes from now")
        signed = f"{message_id}.{timestamp}.".encode() + delivery.body
        expected = [base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()) for key in self._keys]
        entries = (entry.partition(",") for entry in signatures.split(" "))
        offered = [value.encode() for version, _, value in entries if version == "v1"]
        # Stopping at the first matching offered signature is safe: the sender already knows what it sent.
        if not any(matches_any(theirs, expected) for theirs in offered):
            raise Unauthorized("no webhook-signature matches")

    def normalize(self, delivery: Delivery, mapping: StageMapping) -> Normalized:
        """Turn one generic event into a source event; types other than contact.* are ignored."""
        message_id = delivery.headers.get("webhook-id", "")
        if not 0 < len(message_id) <= 512:
            raise InvalidPayload("webhook-id is missing or longer than 512 characters")
        try:
            document = json.loads(delivery.body)
        except (ValueError, RecursionError):
            raise InvalidPayload("body is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("type"), str):
            raise InvalidPayload("body is not a JSON object with a type")
        event_type = _TYPES.get(document["type"])
        if event_type is None:
            return Normalized(ignored=1)
        try:
            event = _Event.model_validate_json(delivery.body)
        except ValidationError as error:
            raise InvalidPayload(_describe(error)) from None
        if (event_type is SourceEventType.MERGED) != bool(event.merged_object_ids):
            raise InvalidPayload("merged_object_ids is required on contact.merged and allowed nowhere else")
        if event.object_id in event.merged_object_ids:
            raise InvalidPayload("merged_object_ids contains object_id")
        return Normalized(
            events=[
                SourceEvent(
                    id=event_id(SourceSystem.GENERIC, message_id),
                    idempotency_key=message_id,
                    source=SourceSystem.GENERIC,
                    object_type=ObjectType.CONTACT,
                    object_id=event.object_id,
                    event_type=event_type,
                    changes=_changes(event.changes),
                    merged_object_ids=event.merged_object_ids,
                    occurred_at=event.occurred_at,
                    received_at=delivery.received_at,
                )
            ]
        )

    def acknowledgement(self) -> None:
        """Standard Webhooks senders only need a 2xx."""
        return None


def _signing_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret."""
    if not secret.startswith(_KEY_PREFIX):
        raise ValueError("a Standard Webhooks secret must start with whsec_")
    encoded = secret.removeprefix(_KEY_PREFIX)
    try:
        # Accept unpadded base64, as the reference library does.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a Standard Webhooks secret must be base64 after whsec_") from None
    if not key:
        raise ValueError("a Standard Webhooks secret must not be empty")
    return key


def _header(delivery: Delivery, name: str) -> str:
    value: str | None = delivery.headers.get(name)
    if not value:
        raise Unauthorized(f"missing {name} header")
    return value


def _changes(reported: _Changes) -> Changes:
    """Our canonical changes; an empty stage means the sender cleared it."""
    stage: Stage | None = None
    if reported.stage:
        try:
            stage = Stage(reported.stage)
        except ValueError:
            raise InvalidPayload("changes.stage is not a canonical stage") from None
    return Changes(
        stage=stage,
        stage_raw=reported.stage,
        status=reported.status,
        score=reported.score,
        owner_id=reported.owner_id,
        email=reported.email,
        campaign=reported.campaign,
        lead_source=reported.lead_source,
    )


def _describe(error: ValidationError) -> str:
    """Where the body is wrong, by field and error type only: the input may hold personal data."""
    problems = (
        f"{'.'.join(str(part) for part in detail['loc']) or 'body'}: {detail['type']}"
        for detail in error.errors(include_url=False, include_input=False, include_context=False)
    )
    return "; ".join(problems)
