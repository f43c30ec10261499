"""The source events of the sync benchmark: leads walking the funnel, built the way ingest builds them.

Each lead is a HubSpot contact and a Salesforce lead with the same email, both created in the fakes
first (as a person would; the fakes send no webhooks here), so every write-back sync makes finds its
record. A lead's walk is ten events, each with ingest's idempotency key and event id:

    HubSpot    contact.creation, email, lifecyclestage=lead, hubspotscore 20 and 35 (below the
               sales-ready threshold: no-ops), lifecyclestage=marketingqualifiedlead   -> Salesforce write
    Salesforce Lead "Working - Contacted" (sal), "Closed - Converted" naming its contact and
               opportunity (sql), Opportunity "Prospecting", "Closed Won"               -> HubSpot writes

Leads walk in waves: step k of every lead of a wave comes before step k+1 of any of them, so a
lead's events are spread out instead of arriving back to back; its Salesforce steps come two waves
after its HubSpot steps (in life they follow sync's hand-off, never precede it).
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from onefunnel.ingest.platforms.base import event_id
from onefunnel.shared.events import (
    Changes,
    ObjectType,
    RecordLink,
    SourceEvent,
    SourceEventType,
    SourceSystem,
)
from onefunnel.shared.funnel import load_funnel
from onefunnel.simulators.hubspot import HubSpotFake
from onefunnel.simulators.salesforce import FakeSalesforce

STEPS = 10  # events per lead
_CRM_FIRST_STEP, _CRM_DELAY = 6, 2  # the Salesforce steps, and how many waves after the HubSpot ones
PORTAL = "62515"  # the HubSpot fake's default portal id
_SUBSCRIPTION = {"creation": 101, "lifecyclestage": 102, "email": 103, "hubspotscore": 105}
_SCORES = {3: 20.0, 4: 35.0}  # below the funnel's sales-ready score of 50
_MAPPING = load_funnel().stage_mapping


@dataclass(frozen=True)
class Person:
    email: str
    contact_id: str  # HubSpot
    lead_id: str  # Salesforce
    converted_contact_id: str
    opportunity_id: str


class Walks:
    """Create people in the fakes and yield their events in wave order."""

    def __init__(self, *, hubspot: HubSpotFake, salesforce: FakeSalesforce, run: str) -> None:
        self._hubspot, self._salesforce, self._run = hubspot, salesforce, run
        self._hubspot_event_ids = itertools.count(7_000_000_000)
        self._people = itertools.count()

    def people(self, count: int) -> list[Person]:
        """Create `count` people in both fakes."""
        made = []
        for _ in range(count):
            email = f"bench-{self._run}-{next(self._people)}@example.com"
            made.append(
                Person(
                    email=email,
                    contact_id=self._hubspot.user_creates_contact(email),
                    lead_id=self._salesforce.user_creates_lead(email),
                    converted_contact_id=self._salesforce.new_id("003"),
                    opportunity_id=self._salesforce.new_id("006"),
                )
            )
        return made

    def in_waves(self, people: list[Person], *, wave: int) -> Iterator[tuple[Person, int]]:
        """(person, step) in the order the events happen.

        A wave's Salesforce steps come two waves after its HubSpot steps, interleaved with a later
        wave's HubSpot steps: the Salesforce side of a lead starts once sync had time to hand it over.
        """
        waves = [people[start : start + wave] for start in range(0, len(people), wave)]
        for k in range(len(waves) + _CRM_DELAY):
            for step in range(STEPS):
                index = k if step < _CRM_FIRST_STEP else k - _CRM_DELAY
                if 0 <= index < len(waves):
                    for person in waves[index]:
                        yield person, step

    def event(self, person: Person, step: int, *, at: datetime) -> SourceEvent:
        """Step `step` of a person's walk, as ingest would normalize the webhook it comes in."""
        match step:
            case 0:
                return self._hubspot_event("creation", person, Changes(), at=at)
            case 1:
                return self._hubspot_event("email", person, Changes(email=person.email), at=at)
            case 2 | 5:
                raw = "lead" if step == 2 else "marketingqualifiedlead"
                stage = _MAPPING.to_canonical(SourceSystem.HUBSPOT, "lifecyclestage", raw)
                return self._hubspot_event(
                    "lifecyclestage", person, Changes(stage=stage, stage_raw=raw), at=at
                )
            case 3 | 4:
                return self._hubspot_event("hubspotscore", person, Changes(score=_SCORES[step]), at=at)
            case 6 | 7:
                return self._salesforce_lead(person, converted=step == 7, at=at)
            case 8 | 9:
                return self._salesforce_opportunity(person, won=step == 9, at=at)
        raise ValueError(f"a walk has {STEPS} steps, not {step + 1}")

    def _hubspot_event(self, kind: str, person: Person, changes: Changes, *, at: datetime) -> SourceEvent:
        key = f"{PORTAL}:{_SUBSCRIPTION[kind]}:{next(self._hubspot_event_ids)}"
        return SourceEvent(
            id=event_id(SourceSystem.HUBSPOT, key),
            idempotency_key=key,
            source=SourceSystem.HUBSPOT,
            account_id=PORTAL,
            object_type=ObjectType.CONTACT,
            object_id=person.contact_id,
            event_type=SourceEventType.CREATED if kind == "creation" else SourceEventType.CHANGED,
            changes=changes,
            change_source="CRM_UI",
            occurred_at=at,
            received_at=at,
        )

    def _salesforce_lead(self, person: Person, *, converted: bool, at: datetime) -> SourceEvent:
        status = "Closed - Converted" if converted else "Working - Contacted"
        related = [
            RecordLink(system=SourceSystem.SALESFORCE, object_type=kind, record_id=record)
            for kind, record in (
                (ObjectType.OPPORTUNITY, person.opportunity_id),
                (ObjectType.CONTACT, person.converted_contact_id),
            )
        ]
        changes = Changes(
            stage=_MAPPING.to_canonical(SourceSystem.SALESFORCE, "lead_status", status),
            stage_raw=status,
            status=status,
            email=person.email,
            owner_id=self._salesforce.human_user_id,
        )
        return self._salesforce_event(
            ObjectType.LEAD, person.lead_id, changes, related if converted else [], at
        )

    def _salesforce_opportunity(self, person: Person, *, won: bool, at: datetime) -> SourceEvent:
        stage_name = "Closed Won" if won else "Prospecting"
        changes = Changes(
            stage=_MAPPING.to_canonical(SourceSystem.SALESFORCE, "opportunity_stage", stage_name),
            stage_raw=stage_name,
            status="won" if won else "open",
            owner_id=self._salesforce.human_user_id,
        )
        return self._salesforce_event(ObjectType.OPPORTUNITY, person.opportunity_id, changes, [], at)

    def _salesforce_event(
        self, kind: ObjectType, record_id: str, changes: Changes, related: list[RecordLink], at: datetime
    ) -> SourceEvent:
        key = self._salesforce.new_id("04l")  # the Outbound Message notification id
        return SourceEvent(
            id=event_id(SourceSystem.SALESFORCE, key),
            idempotency_key=key,
            source=SourceSystem.SALESFORCE,
            account_id=self._salesforce.organization_id,
            object_type=kind,
            object_id=record_id,
            event_type=SourceEventType.CHANGED,
            changes=changes,
            related=related,
            change_source=self._salesforce.human_user_id,
            occurred_at=at,
            received_at=at,
        )
