"""What the funnel reads besides the raw facts: each fact's derived columns and the daily rollup.

A window's funnel counts, for each stage S, each lead's first entry into S in the window, and whether
the lead entered a later stage T between then and the window's end (funnel_query.py has the full
definitions). A fact that is its lead's first entry into S ever (`first_entry`) is always the one
counted, and whether it converted to T is `next_T_at < end`: so the whole days of a window can be
summed from one row per day, stage, campaign and origin system (`metrics_funnel_day`), and only the
window's partial days and the rare re-entries are read fact by fact.

Both are kept current by `apply`, in the transaction that stores the facts: a fact arriving late can
change its lead's earlier facts (their `next_T_at`) and later ones (their `first_entry`), and the
rollup is moved by the difference.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from onefunnel.metrics.tables import FunnelDayRow
from onefunnel.shared import database
from onefunnel.shared.stages import FUNNEL

LATER = tuple(stage.value for stage in FUNNEL[1:])  # the stages a fact keeps `next_<stage>_at` for
MEASURES = ("entries", "leads", *(f"to_{stage}" for stage in LATER))
_ROWS_PER_STATEMENT = 1000  # 12 parameters a row, within both databases' parameter limits

Key = tuple[date, str, str, str]  # day, stage, campaign ('' for none), origin system ('' for none)
Change = Counter[tuple[Key, str]]  # a change of the rollup: (key, measure) -> count to add
Derived = tuple[bool, tuple[datetime | None, ...]]  # first_entry, next_<stage>_at in LATER order


@dataclass(slots=True)
class Fact:
    """What the counting needs of a stored or new fact (plain data: thousands per batch)."""

    event_id: UUID
    lead_id: UUID
    to_stage: str
    occurred_at: datetime  # aware, UTC
    recorded_at: datetime
    campaign: str | None
    origin_system: str | None
    derived: Derived | None  # None for a fact not stored yet

    @property
    def key(self) -> Key:
        return (self.occurred_at.date(), self.to_stage, self.campaign or "", self.origin_system or "")


def _contribution(derived: Derived) -> Counter[str]:
    first, nexts = derived
    counts = Counter({"entries": 1})
    if first:
        counts["leads"] = 1
        counts.update(f"to_{stage}" for stage, moment in zip(LATER, nexts, strict=True) if moment is not None)
    return counts


def derive(facts: Sequence[Fact]) -> list[Derived]:
    """The derived columns of each of one lead's facts (all of them), from those facts alone."""
    order = sorted(facts, key=lambda f: (f.occurred_at, f.event_id))
    seen: set[str] = set()
    first: dict[UUID, bool] = {}
    for fact in order:
        first[fact.event_id] = fact.to_stage not in seen
        seen.add(fact.to_stage)
    entries = {stage: [f.occurred_at for f in order if f.to_stage == stage] for stage in LATER}
    return [
        (
            first[fact.event_id],
            tuple(min((e for e in entries[stage] if e >= fact.occurred_at), default=None) for stage in LATER),
        )
        for fact in facts
    ]


def apply(facts: Sequence[Fact], change: Change) -> list[Fact]:
    """Set the derived columns of one lead's facts (stored and new); add the rollup's change.

    Returns the stored facts whose derived columns changed (to be updated).
    """
    changed = []
    for fact, derived in zip(facts, derive(facts), strict=True):
        before = fact.derived
        if derived == before:
            continue
        change.update({(fact.key, m): n for m, n in _contribution(derived).items()})
        if before is not None:
            change.subtract({(fact.key, m): n for m, n in _contribution(before).items()})
            changed.append(fact)
        fact.derived = derived
    return changed


async def add(session: AsyncSession, change: Change) -> None:
    """Add a change from `apply` to the rollup (rows in key order, so concurrent writers never deadlock)."""
    rows: dict[Key, dict[str, object]] = {}
    for (key, measure), count in change.items():
        if count:
            row = rows.setdefault(key, dict.fromkeys(MEASURES, 0))
            row[measure] = count
    values = [
        {"day": key[0], "stage": key[1], "campaign": key[2], "origin_system": key[3], **measures}
        for key, measures in sorted(rows.items())
    ]
    table = FunnelDayRow.__table__  # type: ignore[attr-defined]
    for start in range(0, len(values), _ROWS_PER_STATEMENT):
        insert = database.insert(session, FunnelDayRow).values(values[start : start + _ROWS_PER_STATEMENT])
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["day", "stage", "campaign", "origin_system"],
                set_={m: table.c[m] + insert.excluded[m] for m in MEASURES},
            )
        )
