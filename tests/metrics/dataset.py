"""Seven leads' transitions in autumn 2026, small enough that every expected number is counted by hand.

All times UTC; owners: `mkt` for marketing stages, `rep-1`/`rep-2` for sales stages.

    L1 spring/hubspot     subscriber 10-05 09:00, lead 10-06 09:00, mql 10-08 09:00, sal 10-12 09:00 (rep-1)
    L2 spring/hubspot     subscriber 10-05 09:00 (same instant as L1's), lead 10-13 12:00
    L3 spring/hubspot     lead 10-07 10:00, mql 10-07 16:00, disqualified 10-20 10:00
    L4 autumn/salesforce  subscriber 10-14 08:00, lead 10-14 09:00, mql 10-21 08:00 (exactly 7 days on),
                          sal 10-22 09:00 (rep-2), sql 10-29 09:00 (rep-2)
    L5 autumn/salesforce  mql 09-25 09:00, sal 10-02 09:00 (rep-1), nurture 10-10 09:00, mql 10-15 09:00,
                          nurture 10-18 09:00, mql 10-25 09:00 (a Sunday), sal 11-03 09:00 (rep-1)
    L6 -/-                subscriber 10-31 23:00, lead 11-01 01:00 (owner none)
    L7 -/hubspot          subscriber 10-15 10:00:00.250000, mql 10-22 10:00:00.249999 (7 days less 1 us on)

October (the window [10-01, 11-01) most tests use) holds 22 of these 29 facts.
"""

import uuid
from datetime import UTC, datetime

from onefunnel.shared.events import Attribution, Cause, LeadStageChanged, SourceEventType, SourceSystem
from onefunnel.shared.stages import Stage

OCTOBER = {"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
LEADS = {f"L{n}": uuid.uuid5(uuid.NAMESPACE_URL, f"onefunnel-test:L{n}") for n in range(1, 8)}
_MARKETING = {Stage.SUBSCRIBER, Stage.LEAD, Stage.MQL, Stage.NURTURE, Stage.DISQUALIFIED}
_ATTRIBUTION = {
    "L1": ("spring", SourceSystem.HUBSPOT),
    "L2": ("spring", SourceSystem.HUBSPOT),
    "L3": ("spring", SourceSystem.HUBSPOT),
    "L4": ("autumn", SourceSystem.SALESFORCE),
    "L5": ("autumn", SourceSystem.SALESFORCE),
    "L6": (None, None),
    "L7": (None, SourceSystem.HUBSPOT),
}
_WALKS: dict[str, list[tuple[Stage, str, str | None]]] = {
    "L1": [
        (Stage.SUBSCRIBER, "10-05 09:00", "mkt"),
        (Stage.LEAD, "10-06 09:00", "mkt"),
        (Stage.MQL, "10-08 09:00", "mkt"),
        (Stage.SAL, "10-12 09:00", "rep-1"),
    ],
    "L2": [(Stage.SUBSCRIBER, "10-05 09:00", "mkt"), (Stage.LEAD, "10-13 12:00", "mkt")],
    "L3": [
        (Stage.LEAD, "10-07 10:00", "mkt"),
        (Stage.MQL, "10-07 16:00", "mkt"),
        (Stage.DISQUALIFIED, "10-20 10:00", "mkt"),
    ],
    "L4": [
        (Stage.SUBSCRIBER, "10-14 08:00", "mkt"),
        (Stage.LEAD, "10-14 09:00", "mkt"),
        (Stage.MQL, "10-21 08:00", "mkt"),
        (Stage.SAL, "10-22 09:00", "rep-2"),
        (Stage.SQL, "10-29 09:00", "rep-2"),
    ],
    "L5": [
        (Stage.MQL, "09-25 09:00", "mkt"),
        (Stage.SAL, "10-02 09:00", "rep-1"),
        (Stage.NURTURE, "10-10 09:00", "mkt"),
        (Stage.MQL, "10-15 09:00", "mkt"),
        (Stage.NURTURE, "10-18 09:00", "mkt"),
        (Stage.MQL, "10-25 09:00", "mkt"),
        (Stage.SAL, "11-03 09:00", "rep-1"),
    ],
    "L6": [(Stage.SUBSCRIBER, "10-31 23:00", None), (Stage.LEAD, "11-01 01:00", None)],
    "L7": [(Stage.SUBSCRIBER, "10-15 10:00:00.250000", "mkt"), (Stage.MQL, "10-22 10:00:00.249999", "mkt")],
}


def at(moment: str) -> datetime:
    """'MM-DD HH:MM[:SS.ffffff]' in 2026, UTC."""
    return datetime.fromisoformat(f"2026-{moment}").replace(tzinfo=UTC)


def transitions() -> list[LeadStageChanged]:
    """Every fact of the dataset, as the metrics consumer receives them."""
    events = []
    for name, walk in _WALKS.items():
        campaign, origin = _ATTRIBUTION[name]
        before: Stage | None = None
        for stage, moment, owner in walk:
            events.append(
                LeadStageChanged(
                    id=uuid.uuid5(LEADS[name], f"{stage}@{moment}"),
                    lead_id=LEADS[name],
                    from_stage=before,
                    to_stage=stage,
                    occurred_at=at(moment),
                    recorded_at=at(moment).replace(second=59),
                    cause=Cause(
                        system=SourceSystem.HUBSPOT if stage in _MARKETING else SourceSystem.SALESFORCE,
                        source_event_id=uuid.uuid5(LEADS[name], f"source {stage}@{moment}"),
                        event_type=SourceEventType.CHANGED,
                    ),
                    attribution=Attribution(campaign=campaign, origin_system=origin),
                    owner_id=owner,
                )
            )
            before = stage
    return events
