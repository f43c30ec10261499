"""Demo traffic: people from several campaigns walking the funnel in HubSpot and Salesforce.

Everything a lead will do is drawn up front from the seed, so the same seed (with the same rate
and duration) gives the same funnel. Time is compressed: a journey that takes weeks takes seconds.
The platforms act as their simulators: a person edits HubSpot or Salesforce, the simulator sends
the signed webhook to ingest, and sync writes the change to the other system.
"""

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from onefunnel.simulators.hubspot import HubSpotFake
from onefunnel.simulators.salesforce import FakeSalesforce


@dataclass(frozen=True)
class Campaign:
    name: str
    source: str  # HubSpot's Original Source
    to_mql: float  # share of its leads marketing qualifies
    to_sal: float  # of those, share sales accepts
    to_opportunity: float  # of those, share converted to an opportunity
    to_won: float  # of those, share won (the rest are lost and recycled)


CAMPAIGNS: tuple[Campaign, ...] = (
    Campaign("spring-webinar", "OFFLINE", to_mql=0.7, to_sal=0.8, to_opportunity=0.6, to_won=0.5),
    Campaign("paid-search", "PAID_SEARCH", to_mql=0.45, to_sal=0.6, to_opportunity=0.4, to_won=0.35),
    Campaign("newsletter", "EMAIL_MARKETING", to_mql=0.25, to_sal=0.5, to_opportunity=0.3, to_won=0.3),
)


@dataclass(frozen=True)
class Journey:
    """What one person will do, and the (compressed) pause before each step."""

    email: str
    campaign: Campaign
    start: str  # subscriber or lead
    steps: tuple[str, ...]  # mql, sal, disqualify, convert, won, lost
    pauses: tuple[float, ...]


def plan(*, leads: int, seed: int, pace: float) -> list[Journey]:
    """Draw every journey from the seed; `pace` scales the pauses (seconds of demo per step)."""
    rng = random.Random(seed)
    journeys = []
    for n in range(leads):
        campaign = rng.choices(CAMPAIGNS, weights=(3, 4, 3))[0]
        steps: list[str] = []
        if rng.random() < campaign.to_mql:
            steps.append("mql")
            if rng.random() < 0.1:
                steps.append("disqualify")
            elif rng.random() < campaign.to_sal:
                steps.append("sal")
                if rng.random() < campaign.to_opportunity:
                    steps += ["convert", "won" if rng.random() < campaign.to_won else "lost"]
        journeys.append(
            Journey(
                email=f"person{n}.{seed}@demo.onefunnel.io",
                campaign=campaign,
                start=rng.choice(["subscriber", "lead"]),
                steps=tuple(steps),
                pauses=tuple(pace * rng.uniform(0.5, 1.5) for _ in steps),
            )
        )
    return journeys


@dataclass
class Progress:
    started: int = 0
    finished: int = 0
    stuck: list[str] = field(default_factory=list)  # journeys that waited too long for sync


async def walk(
    journey: Journey, *, hubspot: HubSpotFake, salesforce: FakeSalesforce, progress: Progress, patience: float
) -> None:
    """Play one journey: HubSpot first, then Salesforce once sync has handed the lead over."""
    progress.started += 1
    contact = hubspot.user_creates_contact(
        journey.email,
        journey.start,
        utm_campaign=journey.campaign.name,
        hs_analytics_source=journey.campaign.source,
    )
    lead_id = opportunity_id = ""
    for step, pause in zip(journey.steps, journey.pauses, strict=True):
        await asyncio.sleep(pause)
        if step == "mql":
            hubspot.user_sets_lifecyclestage(contact, "marketingqualifiedlead")
            continue
        lead_id = lead_id or await _handed_over(salesforce, journey.email, patience=patience)
        if not lead_id:
            progress.stuck.append(journey.email)
            return
        if step == "disqualify":
            salesforce.user_sets_status(lead_id, "Closed - Not Converted")
        elif step == "sal":
            salesforce.user_sets_status(lead_id, "Working - Contacted")
        elif step == "convert":
            opportunity_id = salesforce.user_converts(lead_id).opportunity_id
        else:
            salesforce.user_sets_opportunity_stage(
                opportunity_id, "Closed Won" if step == "won" else "Closed Lost"
            )
    progress.finished += 1


async def _handed_over(salesforce: FakeSalesforce, email: str, *, patience: float) -> str:
    """Wait for sync to create the Salesforce lead (the hand-off at mql); '' if it does not come."""
    try:
        async with asyncio.timeout(patience):
            while True:
                for record in salesforce.snapshot()["Lead"].values():
                    if record.get("Email") == email:
                        return str(record["Id"])
                await asyncio.sleep(0.2)
    except TimeoutError:
        return ""


async def run_traffic(
    journeys: Sequence[Journey],
    *,
    hubspot: HubSpotFake,
    salesforce: FakeSalesforce,
    rate: float,
    progress: Progress,
    patience: float = 60.0,
) -> None:
    """Start `rate` journeys per second, then wait for all of them to end."""
    walkers = []
    for journey in journeys:
        walkers.append(
            asyncio.create_task(
                walk(journey, hubspot=hubspot, salesforce=salesforce, progress=progress, patience=patience)
            )
        )
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*walkers, return_exceptions=True)
