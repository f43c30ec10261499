"""The HubSpot fake's contacts and the write rules HubSpot applies to them.

Follows https://developers.hubspot.com/docs/api/crm/contacts (ids, `createdate`, `lastmodifieddate`) and
https://developers.hubspot.com/docs/api/crm/properties (the `lifecyclestage` options, in HubSpot's order):
- `lifecyclestage` only moves forward in the order of its options; setting an earlier value answers 200 and
  leaves the value as it was. Clearing it ("") first, in a separate request, allows any value next: a recycle
  is two writes and two webhooks. (Community answer by HubSpot staff, integrate.hubspot.com/t/1333.)
- A merge keeps the stage furthest down the funnel (knowledge.hubspot.com "Merge records").
- Every change fires the subscriptions of `hubspot_webhooks.py`: `contact.creation` (plus a
  `contact.propertyChange` per subscribed property set at creation), one `contact.propertyChange` per
  changed `lifecyclestage` or `email` (or other subscribed property), `contact.merge`, `contact.deletion`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from onefunnel.simulators.hubspot_webhooks import SUBSCRIBED_PROPERTIES, ChangeSource, ContactEvents, Event

# The default options in HubSpot's order, value: label; "other" is the last option, so the furthest one.
OPTIONS = {
    "subscriber": "Subscriber",
    "lead": "Lead",
    "marketingqualifiedlead": "Marketing Qualified Lead",
    "salesqualifiedlead": "Sales Qualified Lead",
    "opportunity": "Opportunity",
    "customer": "Customer",
    "evangelist": "Evangelist",
    "other": "Other",
}
LIFECYCLE_STAGES = tuple(OPTIONS)
SYSTEM = ("createdate", "hs_object_id", "lastmodifieddate")


@dataclass
class Contact:
    id: str
    properties: dict[str, str]
    created: float = field(default_factory=time.monotonic)


def moves_forward(current: str, value: str) -> bool:
    """Whether HubSpot applies `value` over `current`: clearing always, else never to an earlier option."""
    if not current or not value:
        return True
    return LIFECYCLE_STAGES.index(value) >= LIFECYCLE_STAGES.index(current)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Contacts:
    """One portal's contacts by id; changes go to `send` as the webhook events they fire."""

    def __init__(self, *, events: ContactEvents, send: Callable[[list[Event]], None]) -> None:
        self.by_id: dict[str, Contact] = {}
        self.send = send
        self._events = events
        self._next_id = 1001

    def create(self, properties: dict[str, str], *, source: ChangeSource) -> Contact:
        """Add a contact with `properties` and send its creation webhooks."""
        contact = Contact(id=str(self._next_id), properties={"createdate": now()})
        contact.properties["hs_object_id"] = contact.id
        self._next_id += 1
        self.by_id[contact.id] = contact
        created = self._events.creation(contact.id, source=source)
        # A property set at creation also fires its propertyChange subscription.
        self.send([created, *self.write(contact, properties, source=source)])
        return contact

    def write(self, contact: Contact, properties: dict[str, str], *, source: ChangeSource) -> list[Event]:
        """Apply `properties` as HubSpot would; returns the events to send."""
        events = []
        for name, value in properties.items():
            current = contact.properties.get(name, "")
            if value == current or (name == "lifecyclestage" and not moves_forward(current, value)):
                continue  # no change, or a backward stage HubSpot silently ignores: no webhook either
            if value:
                contact.properties[name] = value
            else:
                contact.properties.pop(name, None)
            if name in SUBSCRIBED_PROPERTIES:
                events.append(self._events.property_change(contact.id, name=name, value=value, source=source))
        contact.properties["lastmodifieddate"] = now()
        return events

    def merge(self, primary: str, merged: str, *, source: ChangeSource) -> None:
        """Merge `merged` into `primary`, keeping the stage furthest down the funnel."""
        winner, loser = self.by_id[primary], self.by_id.pop(merged)
        stages = [c.properties.get("lifecyclestage", "") for c in (winner, loser)]
        furthest = max(stages, key=lambda s: LIFECYCLE_STAGES.index(s) if s else -1)
        changes = {"lifecyclestage": furthest} if furthest != stages[0] else {}
        merge = self._events.merge(primary, merged, moved=len(changes), source=source)
        changes["hs_merged_object_ids"] = merged
        self.send([merge, *self.write(winner, changes, source=source)])

    def archive(self, contact_id: str, *, source: ChangeSource) -> None:
        """Remove a contact and send contact.deletion; nothing happens if it is already gone."""
        if self.by_id.pop(contact_id, None) is not None:
            self.send([self._events.deletion(contact_id, source=source)])

    def by_email(self, email: str) -> Contact | None:
        """The contact with this email, compared case-insensitively."""
        wanted = email.casefold()
        if not wanted:
            return None
        return next(
            (c for c in self.by_id.values() if c.properties.get("email", "").casefold() == wanted), None
        )
