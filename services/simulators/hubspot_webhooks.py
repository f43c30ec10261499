"""The webhooks the HubSpot fake sends back: legacy Webhooks API events, signed with v3.

Format (https://developers.hubspot.com/docs/api/webhooks): a POST of a JSON array of events with
`eventId`, `subscriptionId`, `portalId`, `appId`, `occurredAt` (ms), `subscriptionType`,
`attemptNumber` (0 on the first try), `objectId`, `changeSource`, and `propertyName`/`propertyValue`
(always a string, "" when cleared) on `contact.propertyChange`. HubSpot guarantees no order and retries
a failed delivery (any non-2xx) up to 10 times over 24 h; here a few times, with compressed delays.

Signature (https://developers.hubspot.com/docs/api/webhooks/validating-requests):
`X-HubSpot-Signature-v3` = base64(HMAC-SHA256(app client secret, "POST" + public URL + body + timestamp))
with `X-HubSpot-Request-Timestamp` in ms; every attempt is signed afresh, as the 5-minute window demands.
"""

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

Event = dict[str, Any]
# One subscription per event type, and per property for propertyChange, as an app configures them.
SUBSCRIPTIONS = {
    "contact.creation": 101,
    "contact.propertyChange:lifecyclestage": 102,
    "contact.propertyChange:email": 103,
    "contact.merge": 104,
    "contact.propertyChange:utm_campaign": 105,
    "contact.propertyChange:hs_analytics_source": 106,
    "contact.deletion": 107,
}
SUBSCRIBED_PROPERTIES = frozenset({"lifecyclestage", "email", "utm_campaign", "hs_analytics_source"})


@dataclass(frozen=True)
class ChangeSource:
    """Who made a change, as `changeSource` and `sourceId` report it."""

    change_source: str
    source_id: str


@dataclass
class ContactEvents:
    """Build the events of one portal and app; ids are unique and `occurredAt` strictly increases."""

    portal_id: int
    app_id: int
    _event_ids: "itertools.count[int]" = field(default_factory=lambda: itertools.count(3_816_279_340))
    _last_ms: int = 0

    def creation(self, contact_id: str, *, source: ChangeSource) -> Event:
        # HubSpot's own example carries changeFlag "NEW"; payloads seen in the wild say "CREATED".
        return self._event("contact.creation", contact_id, source, changeFlag="CREATED")

    def property_change(self, contact_id: str, *, name: str, value: str, source: ChangeSource) -> Event:
        kind = f"contact.propertyChange:{name}"
        return self._event(kind, contact_id, source, propertyName=name, propertyValue=value)

    def deletion(self, contact_id: str, *, source: ChangeSource) -> Event:
        return self._event("contact.deletion", contact_id, source)

    def merge(self, primary: str, merged: str, *, moved: int, source: ChangeSource) -> Event:
        return self._event(
            "contact.merge",
            primary,
            source,
            primaryObjectId=int(primary),
            mergedObjectIds=[int(merged)],
            newObjectId=int(primary),
            numberOfPropertiesMoved=moved,
        )

    def _event(self, kind: str, contact_id: str, source: ChangeSource, **fields: Any) -> Event:
        # Strictly increasing, so a clear and the set that follows it in the same millisecond still order.
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return {
            "eventId": next(self._event_ids),
            "subscriptionId": SUBSCRIPTIONS[kind],
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": self._last_ms,
            "subscriptionType": kind.partition(":")[0],
            "attemptNumber": 0,
            "objectId": int(contact_id),
            "changeSource": source.change_source,
            "sourceId": source.source_id,
            **fields,
        }


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST the fake made: its events (as sent on that attempt) and the receiver's status."""

    events: list[Event]
    status: int | None  # None when the receiver could not be reached


@dataclass
class WebhookSender:
    """Sign and POST event batches in the background, retrying until a 2xx or `attempts` run out."""

    url: str  # the public URL HubSpot would call, exactly as the receiver rebuilds it
    client_secret: str
    http: httpx.AsyncClient
    attempts: int = 4
    retry_delay: float = 0.01  # doubles per retry; HubSpot's own delays span 24 hours
    shuffle_window: float = 0.0  # > 0: each batch waits a random part of it, so batches may overtake
    rng: random.Random = field(default_factory=random.Random)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def send(self, events: list[Event]) -> None:
        """Deliver one batch in a background task (needs a running event loop)."""
        task = asyncio.get_running_loop().create_task(self._deliver(events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every batch sent so far was delivered or gave up."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def delivered_events(self) -> list[Event]:
        """The events of every attempt the receiver acknowledged with a 2xx, in arrival order."""
        return [
            e for d in self.deliveries if d.status is not None and 200 <= d.status < 300 for e in d.events
        ]

    async def _deliver(self, events: list[Event]) -> None:
        if self.shuffle_window > 0:
            await asyncio.sleep(self.rng.uniform(0, self.shuffle_window))
        for attempt in range(self.attempts):
            batch = [{**event, "attemptNumber": attempt} for event in events]
            status = await self._post(json.dumps(batch, separators=(",", ":")).encode())
            self.deliveries.append(WebhookDelivery(events=batch, status=status))
            if status is not None and 200 <= status < 300:
                return
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.retry_delay * 2**attempt)

    async def _post(self, body: bytes) -> int | None:
        timestamp = str(int(time.time() * 1000))
        signed = b"POST" + self.url.encode() + body + timestamp.encode()
        signature = base64.b64encode(hmac.new(self.client_secret.encode(), signed, hashlib.sha256).digest())
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": signature.decode(),
            "X-HubSpot-Request-Timestamp": timestamp,
        }
        try:
            # HubSpot gives a receiver 5 seconds before it counts the delivery as failed.
            response = await self.http.post(self.url, content=body, headers=headers, timeout=5.0)
        except httpx.HTTPError:
            return None
        return response.status_code
