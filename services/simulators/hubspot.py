"""A stateful fake of HubSpot's CRM v3 contacts API, sending the webhooks HubSpot would send.

Follows https://developers.hubspot.com/docs/api/crm/contacts; one portal, in parts that each cite the
documentation they follow:
- `hubspot_contacts.py`: the contacts and HubSpot's write rules (`lifecyclestage` only moves forward, merges).
- `hubspot_api.py`: the HTTP routes (contacts, batch read and update, the `lifecyclestage` definition).
- `hubspot_gate.py`: auth, rate limits and the error bodies.
- `hubspot_webhooks.py`: the webhooks, signed with v3.

`changeSource` is INTEGRATION with our app id as `sourceId` for API writes (what delivered payloads show;
HubSpot documents only that the values mirror property history sources) and CRM_UI with `userId:<id>` for
the user actions.

Not modelled: batch endpoints, other objects, merged ids resolving to the survivor (here they are 404).
"""

import random
from collections.abc import Sequence

import httpx

from onefunnel.simulators.hubspot_api import ApiCall, build_app
from onefunnel.simulators.hubspot_contacts import LIFECYCLE_STAGES, SYSTEM, Contacts, moves_forward
from onefunnel.simulators.hubspot_gate import Gate
from onefunnel.simulators.hubspot_webhooks import ChangeSource, ContactEvents, Event, WebhookSender

__all__ = ["LIFECYCLE_STAGES", "HubSpotFake"]


class HubSpotFake:
    """One HubSpot portal: its contacts, its API (`app`), its webhooks, and what a person does in the UI."""

    def __init__(
        self,
        *,
        access_tokens: Sequence[str] = ("pat-na1-fake-token",),
        portal_id: int = 62515,
        app_id: int = 1160452,
        webhook_url: str | None = None,
        client_secret: str = "",
        webhook_client: httpx.AsyncClient | None = None,
        shuffle_webhooks: bool = False,
        seed: int | None = None,
        rate_limit_max: int = 190,
        rate_limit_window: float = 10.0,
        latency: float = 0.0,
    ) -> None:
        self.latency = latency
        self.calls: list[ApiCall] = []
        self.stage_writes: list[str] = []  # the contact of each lifecyclestage write, alone or in a batch
        self.gate = Gate(access_tokens=access_tokens, limit=rate_limit_max, window=rate_limit_window)
        self.contacts = Contacts(events=ContactEvents(portal_id=portal_id, app_id=app_id), send=self._send)
        # Writes through our private app arrive as INTEGRATION with the app id (seen in delivered payloads;
        # HubSpot documents only that changeSource mirrors the property history's sources).
        self.integration = ChangeSource("INTEGRATION", str(app_id))
        self.user = ChangeSource("CRM_UI", "userId:4242")
        self.webhooks: WebhookSender | None = None
        self._owned_http: httpx.AsyncClient | None = None
        if webhook_url is not None:
            http = webhook_client or httpx.AsyncClient()
            self._owned_http = None if webhook_client else http
            self.webhooks = WebhookSender(
                url=webhook_url,
                client_secret=client_secret,
                http=http,
                shuffle_window=0.05 if shuffle_webhooks else 0.0,
                rng=random.Random(seed),
            )
        self.app = build_app(self)

    # -- faults and assertions ------------------------------------------------------------------

    def inject_errors(self, status: int = 500, count: int = 1) -> None:
        """Answer the next `count` authenticated calls with `status`."""
        self.gate.injected_errors += [status] * count

    def inject_rate_limit(self, count: int = 1, retry_after: float = 1.0) -> None:
        """Answer the next `count` authenticated calls with 429 TEN_SECONDLY_ROLLING."""
        self.gate.injected_limits += [retry_after] * count

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Every contact's properties, without the system ones (createdate, hs_object_id, ...)."""
        return {
            cid: {k: v for k, v in c.properties.items() if k not in SYSTEM}
            for cid, c in self.contacts.by_id.items()
        }

    async def webhooks_idle(self) -> None:
        """Wait until every webhook sent so far was delivered (or gave up)."""
        if self.webhooks is not None:
            await self.webhooks.idle()

    async def aclose(self) -> None:
        """Deliver what is pending, then close the webhook client if the fake made it."""
        await self.webhooks_idle()
        if self._owned_http is not None:
            await self._owned_http.aclose()

    # -- what a person does in the HubSpot UI ----------------------------------------------------

    def user_creates_contact(self, email: str, lifecyclestage: str = "", **properties: str) -> str:
        """Create a contact as a user (or a form) would; returns its id.

        Extra properties (`utm_campaign`, `hs_analytics_source`) are set before the stage, so their
        webhooks come first, as a form submission's would.
        """
        return self.contacts.create(
            {"email": email, **properties, "lifecyclestage": lifecyclestage}, source=self.user
        ).id

    def user_sets_lifecyclestage(self, contact_id: str, value: str) -> None:
        """Set the stage as a user would; an earlier stage is a clear then a set, so two webhooks."""
        if value not in (*LIFECYCLE_STAGES, ""):
            raise ValueError(f"{value!r} is not a lifecycle stage option")
        contact = self.contacts.by_id[contact_id]
        if not moves_forward(contact.properties.get("lifecyclestage", ""), value):
            self._send(self.contacts.write(contact, {"lifecyclestage": ""}, source=self.user))
        self._send(self.contacts.write(contact, {"lifecyclestage": value}, source=self.user))

    def user_merges(self, primary: str, merged: str) -> None:
        """Merge `merged` into `primary`: the stage furthest down the funnel is kept (merge KB article)."""
        self.contacts.merge(primary, merged, source=self.user)

    def _send(self, events: list[Event]) -> None:
        if events and self.webhooks is not None:
            self.webhooks.send(events)
