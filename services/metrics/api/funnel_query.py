"""The funnel of a window: entries per stage and stage-to-stage conversions.

Definitions, per group (the whole window when ungrouped):
- entries into S: facts with `to_stage` = S, `occurred_at` in the group's part of [from, to), matching
  the filters;
- leads into S: the distinct leads among them;
- converted S -> T: leads into S that entered T at or after their first such entry into S and before
  `to` (the request's, also when grouped), by any fact: filters select the entries into S only, as
  an owner may change between stages. A lead that skips T never converted to T.
- rate S -> T: converted / leads into S; null when no lead entered S.
Rows follow the canonical funnel order, then the side states (entries and leads only). Each funnel
stage has the conversion from the previous funnel stage and from the base stage (itself: rate 1).

How it is counted: each lead into S is counted at its first entry into S in the group, and
converted when that entry's `next_T_at` (its lead's next entry into T) is before `to`. A lead's
first entry into S ever (`first_entry`) is always that one, so the whole UTC days of the window are
summed from the daily rollup (`metrics_funnel_day`), less the conversions that happened at or after
`to`; the partial days at either end, and the re-entries (a lead entering S again) of the whole
days, are counted from the facts. The cost grows with the days and the facts of the partial days,
not with the facts of the window. The owner filter is not in the rollup: with it, every fact of the
window is read.
"""

from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from onefunnel.metrics.api.funnel_rows import FunnelRow, rows
from onefunnel.metrics.api.groups import Groups
from onefunnel.metrics.api.params import Filters
from onefunnel.metrics.api.periods import period_of
from onefunnel.metrics.api.scope import Facts, between, matching
from onefunnel.metrics.rollup import LATER, MEASURES
from onefunnel.metrics.tables import FunnelDayRow, TransitionRow
from onefunnel.shared.stages import Stage

Query = Select[*tuple[Any, ...]]
Counts = dict[str, Counter[str]]  # group key -> entries_S, leads_S, converted_S_T


def _whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The UTC midnights bounding the whole days inside [start, end), if there is one."""
    first = datetime.combine(start.date(), time(), start.tzinfo)
    first += timedelta(days=0 if first == start else 1)
    last = datetime.combine(end.date(), time(), end.tzinfo)
    return (first, last) if first < last else None


def _group(facts: Facts, groups: Groups) -> list[ColumnElement[str]]:
    """The SQL group key of a fact (none when ungrouped: the one group is '')."""
    return [groups.key(facts)] if groups.key is not None else []


def _counted(facts: Facts, *, groups: Groups, filters: Filters) -> ColumnElement[bool]:
    """SQL: the fact is its lead's first entry into its stage in its group (of the matching facts)."""
    earlier = aliased(TransitionRow)
    same_group = [groups.key(earlier) == groups.key(facts)] if groups.key is not None else []
    return or_(
        col(facts.first_entry),
        ~exists().where(
            col(earlier.lead_id) == col(facts.lead_id),
            col(earlier.to_stage) == col(facts.to_stage),
            or_(
                col(earlier.occurred_at) < col(facts.occurred_at),
                and_(
                    col(earlier.occurred_at) == col(facts.occurred_at),
                    col(earlier.event_id) < col(facts.event_id),
                ),
            ),
            col(earlier.occurred_at) >= groups.start,
            *matching(earlier, filters),
            *same_group,
        ),
    )


def _next(facts: Facts, stage: str) -> Any:
    """SQL: the fact's lead's next entry into `stage` (at or after the fact)."""
    return col(getattr(facts, f"next_{stage}_at"))


def _from_facts(facts: Facts, *, groups: Groups, end: datetime, filters: Filters, entries: bool) -> Query:
    """Entries (or none), leads and conversions before `end`, counted fact by fact."""
    counted = _counted(facts, groups=groups, filters=filters)
    by = _group(facts, groups)
    return (
        select(
            *(key.label("g") for key in by),
            col(facts.to_stage).label("stage"),
            (func.count() if entries else literal(0)).label("entries"),
            func.count().filter(counted).label("leads"),
            *(
                func.count().filter(counted, getattr(facts, f"next_{t}_at") < end).label(f"to_{t}")
                for t in LATER
            ),
        )
        .where(*matching(facts, filters), *groups.bounds(facts))
        .group_by(*by, col(facts.to_stage))
    )


def _late(
    facts: Facts, *, groups: Groups, days: tuple[datetime, datetime], end: datetime, filters: Filters
) -> Query:
    """The rollup's conversions (of first entries in `days`) that happened at or after `end`."""
    after = aliased(TransitionRow)
    by = _group(facts, groups)
    return (
        select(
            *(key.label("g") for key in by),
            col(facts.to_stage).label("stage"),
            literal(0).label("entries"),
            literal(0).label("leads"),
            *(func.count().filter(_next(facts, t) >= end).label(f"to_{t}") for t in LATER),
        )
        .where(
            col(facts.first_entry),
            *between(facts, *days),
            *matching(facts, filters),
            *groups.bounds(facts),
            # only leads with a fact at or after `end`: none for a window ending now
            col(facts.lead_id).in_(select(col(after.lead_id)).where(col(after.occurred_at) >= end)),
        )
        .group_by(*by, col(facts.to_stage))
    )


def _rollup(*, groups: Groups, days: tuple[datetime, datetime], filters: Filters) -> Query:
    """The rollup's sums over `days` (first entries: leads, and conversions at any time), per day
    when grouped by period (the days are put in their periods in Python)."""
    day = col(FunnelDayRow.day)
    by: list[Any] = [day] if groups.period is not None else [*_group(FunnelDayRow, groups)]
    return (
        select(
            *(key.label("g") for key in by),
            col(FunnelDayRow.stage).label("stage"),
            *(func.sum(getattr(FunnelDayRow, m)).label(m) for m in MEASURES),
        )
        .where(
            day >= days[0].date(),
            day < days[1].date(),
            *matching(FunnelDayRow, filters),
            *groups.bounds(FunnelDayRow),
        )
        .group_by(*by, col(FunnelDayRow.stage))
    )


def _period_key(day: date | str, groups: Groups) -> str:
    assert groups.period is not None
    first = date.fromisoformat(day) if isinstance(day, str) else day
    return period_of(datetime.combine(first, time(), groups.start.tzinfo), groups.period).date().isoformat()


async def _add(session: AsyncSession, counts: Counts, query: Query, *, groups: Groups, sign: int = 1) -> None:
    """Add (or subtract) a query's per-group, per-stage measures to the counts."""
    for row in (await session.execute(query)).mappings():
        key = row.get("g", "")
        if isinstance(key, date):  # a rollup day, when grouped by period
            key = _period_key(key, groups)
        counted = counts.setdefault(key, Counter())
        stage = row["stage"]
        counted[f"entries_{stage}"] += sign * int(row["entries"] or 0)
        counted[f"leads_{stage}"] += sign * int(row["leads"] or 0)
        for t in LATER:
            counted[f"converted_{stage}_{t}"] += sign * int(row[f"to_{t}"] or 0)


async def funnel(
    session: AsyncSession, *, groups: Groups, end: datetime, filters: Filters, base: Stage
) -> list[FunnelRow]:
    """The rows of the page of groups `groups`, counting entries into T before `end`."""
    if not groups.keys:
        return []
    counts: Counts = {}
    facts = aliased(TransitionRow)
    days = _whole_days(groups.start, groups.end) if filters.owner_id is None else None

    def counted(*, entries: bool) -> Query:
        return _from_facts(facts, groups=groups, end=end, filters=filters, entries=entries)

    if days is None:
        whole = counted(entries=True).where(*between(facts, groups.start, groups.end))
        await _add(session, counts, whole, groups=groups)
    else:
        await _add(session, counts, _rollup(groups=groups, days=days, filters=filters), groups=groups)
        late = _late(facts, groups=groups, days=days, end=end, filters=filters)
        await _add(session, counts, late, groups=groups, sign=-1)
        reentries = counted(entries=False).where(*between(facts, *days), ~col(facts.first_entry))
        await _add(session, counts, reentries, groups=groups)
        for start, stop in ((groups.start, days[0]), (days[1], groups.end)):
            if start < stop:
                edge = counted(entries=True).where(*between(facts, start, stop))
                await _add(session, counts, edge, groups=groups)
    return [row for key in groups.keys for row in rows(groups.label(key), counts.get(key, {}), base)]
