"""The funnel of a window: entries per stage and stage-to-stage conversions, in one set-based query.

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

One statement: a pass over the window's facts counts the entries; another folds each lead into its
first entry per stage and its last entry per funnel stage (aggregates with FILTER, SQLite >= 3.30),
and an outer aggregate counts leads and conversions from those rows. Its cost grows with the facts
in the window (not with the table), read through the (occurred_at, ...) or the campaign index.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Subquery, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement, Label
from sqlmodel import col

from onefunnel.metrics.api.funnel_rows import FunnelRow, pairs, rows
from onefunnel.metrics.api.groups import Groups
from onefunnel.metrics.api.params import Filters
from onefunnel.metrics.api.scope import Facts, between, matching
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.stages import FUNNEL, Stage


def _firsts(facts: Facts, condition: list[ColumnElement[bool]]) -> list[Label[Any]]:
    return [
        func.min(col(facts.occurred_at))
        .filter(col(facts.to_stage) == s.value, *condition)
        .label(f"first_{s}")
        for s in Stage
    ]


def _lasts(facts: Facts) -> list[Label[Any]]:
    return [
        func.max(col(facts.occurred_at)).filter(col(facts.to_stage) == s.value).label(f"last_{s}")
        for s in FUNNEL[1:]
    ]


def _entries(*, groups: Groups, filters: Filters) -> Subquery:
    """Entries per stage (columns), per group."""
    facts = aliased(TransitionRow)
    by = [groups.key(facts)] if groups.key is not None else []
    counts = [func.count().filter(col(facts.to_stage) == s.value).label(f"entries_{s}") for s in Stage]
    return (
        select(*(key.label("g") for key in by), *counts)
        .where(*between(facts, groups.start, groups.end), *matching(facts, filters), *groups.bounds(facts))
        .group_by(*by)
        .subquery("entries")
    )


def _per_lead(*, groups: Groups, end: datetime, filters: Filters) -> Subquery:
    """One row per lead (per group and lead when grouped): its first entries and its last entries."""
    if groups.key is None:
        facts, chosen = aliased(TransitionRow), aliased(TransitionRow)
        scope = between(facts, groups.start, end)
        if filters != Filters():  # only the leads with a matching fact, found by the campaign index
            matched = select(col(chosen.lead_id)).where(
                *between(chosen, groups.start, end), *matching(chosen, filters)
            )
            scope.append(col(facts.lead_id).in_(matched))
        per_lead = select(*_firsts(facts, matching(facts, filters)), *_lasts(facts)).where(*scope)
        return per_lead.group_by(col(facts.lead_id)).subquery("per_lead")
    entered = aliased(TransitionRow)
    per_group = (
        select(groups.key(entered).label("g"), col(entered.lead_id).label("lead_id"), *_firsts(entered, []))
        .where(
            *between(entered, groups.start, groups.end), *matching(entered, filters), *groups.bounds(entered)
        )
        .group_by(groups.key(entered), col(entered.lead_id))
        .cte("per_group")
    )
    reached = aliased(TransitionRow)
    scope = between(reached, groups.start, end)
    if filters != Filters():  # few leads: read just theirs, by the lead_id index
        scope.append(col(reached.lead_id).in_(select(per_group.c.lead_id)))
    later = (
        select(col(reached.lead_id).label("lead_id"), *_lasts(reached))
        .where(*scope)
        .group_by(col(reached.lead_id))
        .cte("later")
    )
    lasts = [later.c[f"last_{s}"] for s in FUNNEL[1:]]
    joined = select(per_group, *lasts).join_from(per_group, later, per_group.c.lead_id == later.c.lead_id)
    return joined.subquery("per_lead")


def _conversions(per_lead: Subquery, *, grouped: bool, base: Stage) -> Subquery:
    """Leads per stage and converted leads per needed pair of stages, per group."""
    by = [per_lead.c.g] if grouped else []
    counts = [func.count(per_lead.c[f"first_{s}"]).label(f"leads_{s}") for s in Stage]
    counts += [
        func.count().filter(per_lead.c[f"last_{t}"] >= per_lead.c[f"first_{s}"]).label(f"converted_{s}_{t}")
        for s, t in pairs(base)
    ]
    return select(*by, *counts).group_by(*by).subquery("conversions")


async def funnel(
    session: AsyncSession, *, groups: Groups, end: datetime, filters: Filters, base: Stage
) -> list[FunnelRow]:
    """The rows of the page of groups `groups`, counting entries into T before `end`."""
    if not groups.keys:
        return []
    grouped = groups.key is not None
    entries = _entries(groups=groups, filters=filters)
    conversions = _conversions(_per_lead(groups=groups, end=end, filters=filters), grouped=grouped, base=base)
    counted = [c for c in conversions.c if c.name != "g"]
    joined = entries.c.g == conversions.c.g if grouped else true()
    result = await session.execute(select(entries, *counted).join_from(entries, conversions, joined))
    found: dict[str, Mapping[str, Any]] = {row.g if grouped else "": row._asdict() for row in result}
    return [row for key in groups.keys for row in rows(groups.label(key), found.get(key, {}), base)]
