"""HubSpot v3-signed deliveries of contact stage changes, each event with an eventId never used before.

The same bytes feed the HTTP load and (normalized as ingest does it) the bare producer, so both
sides of the comparison carry the same messages. Signing follows tests/ingest/deliveries.py:
base64(HMAC-SHA256(secret, method + public URL + body + timestamp in ms)).
"""

import base64
import hashlib
import hmac
import time

PATH = "/webhooks/hubspot"
SECRET = "bench-hubspot-client-secret"  # noqa: S105  # the benchmark's own, signs nothing real
# The internal lifecyclestage values of shared/funnel.yaml, so every event maps to a stage.
_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer")
_EVENT = (
    '{"objectId":%d,"propertyName":"lifecyclestage","propertyValue":"%s","changeSource":"CRM_UI",'
    '"eventId":%d,"subscriptionId":25,"portalId":33,"appId":1160452,"occurredAt":%d,'
    '"subscriptionType":"contact.propertyChange","attemptNumber":0}'
)


class Deliveries:
    """Build signed HTTP/1.1 requests of `batch` events; eventIds count up from `first_event_id`."""

    def __init__(self, *, batch: int, public_base_url: str, host: str, first_event_id: int) -> None:
        self.batch = batch
        self._url = (public_base_url.rstrip("/") + PATH).encode()
        self._host = host
        self._next_id = first_event_id
        self._key = SECRET.encode()

    def body(self) -> tuple[bytes, str]:
        """A fresh JSON array of events and its timestamp (ms) as HubSpot sends it."""
        now_ms = int(time.time() * 1000)
        first = self._next_id
        self._next_id += self.batch
        events = ",".join(
            _EVENT % (event_id % 100_000, _STAGES[event_id % len(_STAGES)], event_id, now_ms)
            for event_id in range(first, first + self.batch)
        )
        return f"[{events}]".encode(), str(now_ms)

    def request(self) -> bytes:
        """One complete request, signed now: the load generator writes it as is."""
        body, timestamp = self.body()
        signed = b"POST" + self._url + body + timestamp.encode()
        signature = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nhost: {self._host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-hubspot-signature-v3: {signature}\r\n"
            f"x-hubspot-request-timestamp: {timestamp}\r\n\r\n"
        )
        return head.encode() + body
