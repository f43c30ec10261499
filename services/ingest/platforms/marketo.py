"""Marketo webhooks: our own payload template, authenticated by a shared token.

Marketo does not sign webhooks; an admin writes the URL, Payload Template and Custom Headers, and Marketo
fills in tokens (AdobeDocs/marketo-developer.en `help/webhooks/webhooks.md`). So the admin pastes
`PAYLOAD_TEMPLATE` and sets a long random token as the `X-Onefunnel-Token` custom header, or as the
`token` query parameter where headers cannot be set (the URL is sent exactly as written, so the token
must be URL-safe).

What Marketo renders, and how it is read here:
- "String-type tokens are automatically enclosed in double quotes" (webhooks.md), with Request Token
  Encoding JSON escaping the value, so the template leaves string tokens unquoted; numbers (`lead.Id`,
  `Lead Score`, `campaign.id`) are bare. An empty string token arrives as `""` (Snowplow's Marketo
  adapter fixture, snowplow/enrich `MarketoAdapterSpec.scala`); an empty number token is taken to arrive
  as nothing (unverified), which `_EMPTY_NUMBER` turns into null.
- `{{system.dateTime}}` renders like `2013-08-08 16:36:13`, in the subscription's time zone, without an
  offset (Experience League "System Tokens Glossary", whose note says the account time zone setting
  applies), so the instance's zone is configuration.
- There is no event id and no retry: the key is a hash of the rendered body, which holds the lead id,
  the campaign id and the time to the second. Every call is a snapshot of the lead: CHANGED.
- Lead owner tokens carry the owner's name and email, not an id (token list in Snowplow's Marketo setup
  guide); Marketo's own API keys owners by email too (SOAP `LEADOWNEREMAIL`), so that is `owner_id`.
"""

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from onefunnel.ingest.platforms.base import (
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

PAYLOAD_TEMPLATE = """{
  "lead_id": {{lead.Id}},
  "email": {{lead.Email Address}},
  "lead_status": {{lead.Lead Status}},
  "lead_score": {{lead.Lead Score}},
  "lead_source": {{lead.Lead Source}},
  "owner_email": {{lead.Lead Owner Email Address}},
  "program": {{program.Name}},
  "campaign_id": {{campaign.id}},
  "date_time": {{system.dateTime}}
}"""
"""The Payload Template an admin pastes into Marketo (Request Token Encoding: JSON)."""

HEADER = "x-onefunnel-token"
QUERY_PARAMETER = "token"

_EMPTY_NUMBER = re.compile(rb'("(?:lead_id|lead_score|campaign_id)":)[ \t]*(?=[,}])')
_DATE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Marketo:
    """Verify and read the webhook calls of one Marketo subscription."""

    source = SourceSystem.MARKETO

    def __init__(self, *, tokens: Sequence[str], time_zone: tzinfo) -> None:
        if not all(tokens):
            raise ValueError("a Marketo webhook token is empty")
        self._tokens = [token.encode() for token in tokens]
        self._time_zone = time_zone

    def verify(self, delivery: Delivery) -> None:
        """Raise Unauthorized unless the request carries one of the shared tokens."""
        if not self._tokens:
            raise Unauthorized("no Marketo webhook token configured")
        # A header, when present, is the token; a wrong one does not fall back to the query.
        offered = delivery.headers.get(HEADER, delivery.query.get(QUERY_PARAMETER))
        if offered is None:
            raise Unauthorized("missing X-Onefunnel-Token header or token parameter")
        if not matches_any(offered.encode(), self._tokens):
            raise Unauthorized("Marketo webhook token does not match")

    def normalize(self, delivery: Delivery, mapping: StageMapping) -> Normalized:
        """Turn one rendered PAYLOAD_TEMPLATE into a lead snapshot event."""
        try:
            payload = json.loads(_EMPTY_NUMBER.sub(rb"\1 null", delivery.body))
        except (ValueError, RecursionError):
            raise InvalidPayload("body is not JSON rendered from the payload template") from None
        if not isinstance(payload, dict):
            raise InvalidPayload("body is not a JSON object")
        lead_id = payload.get("lead_id")
        if not isinstance(lead_id, int) or isinstance(lead_id, bool):
            raise InvalidPayload("lead_id is not a number")
        status = _text(payload.get("lead_status"))
        stage = mapping.to_canonical(SourceSystem.MARKETO, "lead_status", status) if status else None
        idempotency_key = delivery_hash(delivery.body)
        event = SourceEvent(
            id=event_id(SourceSystem.MARKETO, idempotency_key),
            idempotency_key=idempotency_key,
            source=SourceSystem.MARKETO,
            object_type=ObjectType.LEAD,
            object_id=str(lead_id),
            event_type=SourceEventType.CHANGED,
            changes=Changes(
                stage=stage,
                stage_raw=status,
                status=status,
                score=_score(payload.get("lead_score")),
                owner_id=_text(payload.get("owner_email")),
                email=_text(payload.get("email")),
                campaign=_text(payload.get("program")),
                lead_source=_text(payload.get("lead_source")),
            ),
            occurred_at=self._instant(payload.get("date_time")),
            received_at=delivery.received_at,
        )
        return Normalized(events=[event])

    def acknowledgement(self) -> None:
        """Marketo only needs a 2xx; we map nothing back from the response."""
        return None

    def _instant(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise InvalidPayload("date_time is missing")
        try:
            local = datetime.strptime(value, _DATE_TIME_FORMAT)
        except ValueError:
            raise InvalidPayload("date_time is not YYYY-MM-DD HH:MM:SS") from None
        try:
            return local.replace(tzinfo=self._time_zone).astimezone(UTC)
        except OverflowError:  # year 1 east of UTC, year 9999 west of it
            raise InvalidPayload("date_time is out of range") from None


def _text(value: Any) -> str | None:
    # An empty token is a field without a value: not reported, since a snapshot cannot show a clearing.
    return value if isinstance(value, str) and value else None


def _score(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
