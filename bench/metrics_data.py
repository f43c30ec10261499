"""Synthetic transitions for the metrics benchmark: leads walking down the funnel, some dropping out.

Each lead enters as a subscriber and moves on with the probabilities below (its next step a few
hours to days later), so later stages see fewer leads, as a real funnel does; some leads that stop
are disqualified or sent to nurture. A third of the leads have no campaign.
"""

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from onefunnel.shared.events import Attribution, Cause, LeadStageChanged, SourceEventType, SourceSystem
from onefunnel.shared.stages import FUNNEL, Stage

# Probability of reaching each funnel stage after the previous one (lead, mql, ..., customer).
ONWARD = (0.95, 0.75, 0.70, 0.70, 0.60, 0.40)
CAMPAIGNS = ("spring-webinar", "ebook-q3", "paid-search", "partner-referral", "trade-show")
CAMPAIGN_WEIGHTS = (30, 20, 25, 10, 15)
ORIGINS = (SourceSystem.HUBSPOT, SourceSystem.SALESFORCE, SourceSystem.MARKETO)


@dataclass(frozen=True)
class Fact:
    """One transition, as the facts table stores it."""

    event_id: uuid.UUID
    lead_id: uuid.UUID
    from_stage: str | None
    to_stage: str
    occurred_at: datetime
    campaign: str | None
    origin_system: str
    owner_id: str


def walks(*, rng: random.Random, now: datetime, days: float) -> Iterator[list[Fact]]:
    """Endless leads, each first seen in the last `days` days, as its transitions up to `now`."""
    while True:
        lead = uuid.UUID(int=rng.getrandbits(128), version=4)
        campaign = rng.choices(CAMPAIGNS, CAMPAIGN_WEIGHTS)[0] if rng.random() < 0.67 else None
        origin = rng.choice(ORIGINS).value
        owner = f"owner-{rng.randrange(40)}"
        moment = now - timedelta(days=rng.uniform(0, days))
        walk, before = [], None
        reached = [FUNNEL[0]]
        for stage, onward in zip(FUNNEL[1:], ONWARD, strict=True):
            if rng.random() >= onward:
                break
            reached.append(stage)
        if len(reached) < len(FUNNEL) and rng.random() < 0.25:
            reached.append(rng.choice((Stage.DISQUALIFIED, Stage.NURTURE)))
        for stage in reached:
            if moment >= now:
                break
            walk.append(
                Fact(
                    event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    lead_id=lead,
                    from_stage=before,
                    to_stage=stage.value,
                    occurred_at=moment,
                    campaign=campaign,
                    origin_system=origin,
                    owner_id=owner,
                )
            )
            before = stage.value
            moment += timedelta(hours=rng.expovariate(1 / 36))
        yield walk


def facts(*, count: int, seed: int, now: datetime, days: float) -> Iterator[Fact]:
    """Exactly `count` facts, whole leads first."""
    produced = 0
    for walk in walks(rng=random.Random(seed), now=now, days=days):
        yield from walk[: count - produced]
        produced += min(len(walk), count - produced)
        if produced >= count:
            return


def record(fact: Fact) -> tuple[object, ...]:
    """The row COPY writes, in COLUMNS order."""
    recorded = fact.occurred_at + timedelta(seconds=2)
    return (
        fact.event_id,
        fact.lead_id,
        fact.from_stage,
        fact.to_stage,
        fact.occurred_at,
        recorded,
        "salesforce" if fact.to_stage not in ("subscriber", "lead", "mql") else "hubspot",
        fact.campaign,
        None,
        fact.origin_system,
        fact.owner_id,
    )


COLUMNS = [
    "event_id",
    "lead_id",
    "from_stage",
    "to_stage",
    "occurred_at",
    "recorded_at",
    "cause_system",
    "campaign",
    "lead_source",
    "origin_system",
    "owner_id",
]


def events(*, count: int, seed: int, duplicates: float) -> tuple[list[LeadStageChanged], int]:
    """About `count` LeadStageChanged of the last day in time order, `duplicates` of them redelivered.

    Returns the events to publish and how many distinct transitions they hold.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC)
    distinct = round(count / (1 + duplicates))
    chosen = sorted(facts(count=distinct, seed=seed, now=now, days=1), key=lambda f: f.occurred_at)
    published = [_event(fact, recorded=now, rng=rng) for fact in chosen]
    for _ in range(count - distinct):  # a redelivery arrives some time after the original
        at = rng.randrange(len(published))
        published.insert(min(len(published), at + rng.randrange(1, 2000)), published[at])
    return published, distinct


def _event(fact: Fact, *, recorded: datetime, rng: random.Random) -> LeadStageChanged:
    cause = (
        SourceSystem.HUBSPOT if fact.to_stage in ("subscriber", "lead", "mql") else SourceSystem.SALESFORCE
    )
    return LeadStageChanged(
        id=fact.event_id,
        lead_id=fact.lead_id,
        from_stage=Stage(fact.from_stage) if fact.from_stage else None,
        to_stage=Stage(fact.to_stage),
        occurred_at=fact.occurred_at,
        recorded_at=recorded,
        cause=Cause(
            system=cause,
            source_event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            event_type=SourceEventType.CHANGED,
        ),
        attribution=Attribution(campaign=fact.campaign, origin_system=SourceSystem(fact.origin_system)),
        owner_id=fact.owner_id,
    )
