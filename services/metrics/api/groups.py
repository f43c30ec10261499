"""How a report is grouped (by UTC day, ISO week, calendar month or campaign), one page of groups at a time.

Periods are dense: every period the window touches has its rows, empty ones included; the first and
last may be partial (cut by `from` and `to`); a period is named by its first day, 'YYYY-MM-DD'.
Campaigns are those with a matching fact in the window, in code-point order, with the facts that have
no campaign as the group `null`, first. A page holds `limit` groups.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from onefunnel.metrics.api import cursors
from onefunnel.metrics.api.dialects import binary, period_start
from onefunnel.metrics.api.params import Filters, Paging, Window
from onefunnel.metrics.api.periods import Period, next_period, periods
from onefunnel.metrics.api.scope import Facts, between, matching
from onefunnel.metrics.tables import TransitionRow

NO_CAMPAIGN = ""  # the SQL key of the facts without a campaign


class GroupBy(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    CAMPAIGN = "campaign"


def _unbounded(_facts: Facts) -> list[ColumnElement[bool]]:
    return []


@dataclass(frozen=True)
class Groups:
    """One page of groups: their SQL keys in order, where their facts lie, and the next page's cursor."""

    keys: list[str]
    start: datetime  # the page's groups hold facts of [start, end) only
    end: datetime
    key: Callable[[Facts], ColumnElement[str]] | None = None  # SQL: a fact's group; None: ungrouped
    bounds: Callable[[Facts], list[ColumnElement[bool]]] = field(default=_unbounded)
    next_cursor: str | None = None
    period: Period | None = None  # the groups' period, when grouped by one

    def label(self, key: str) -> str | None:
        """The group's name in a response: null for the facts without a campaign."""
        return None if self.key is None or key == NO_CAMPAIGN else key


def ungrouped(window: Window) -> Groups:
    return Groups(keys=[""], start=window.start, end=window.end)


async def page(
    session: AsyncSession, *, group_by: GroupBy | None, window: Window, filters: Filters, paging: Paging
) -> Groups:
    """The page of groups `paging` asks for (ungrouped: the one group of the whole window)."""
    if group_by is None:
        if paging.cursor is not None:
            cursors.decode(paging.cursor, "ungrouped", 0)  # never issued: an ungrouped report is one page
        return ungrouped(window)
    if group_by is GroupBy.CAMPAIGN:
        return await _campaigns(session, window=window, filters=filters, paging=paging)
    return periods_page(Period(group_by.value), window=window, paging=paging)


def periods_page(period: Period, *, window: Window, paging: Paging) -> Groups:
    """`limit` consecutive periods, from the first after the cursor's."""
    start = window.start
    if paging.cursor is not None:
        (last,) = cursors.decode(paging.cursor, period.value, 1)
        try:
            start = max(start, next_period(datetime.fromisoformat(f"{last}T00:00:00+00:00"), period))
        except ValueError:
            raise cursors.malformed(paging.cursor) from None
    spans: list[tuple[datetime, datetime]] = []
    for span in periods(start, window.end, period):
        spans.append(span)
        if len(spans) > paging.limit:
            break
    shown = spans[: paging.limit]
    if not shown:
        return Groups(keys=[], start=window.end, end=window.end)
    keys = [first.date().isoformat() for first, _ in shown]
    return Groups(
        keys=keys,
        start=max(window.start, shown[0][0]),
        end=min(window.end, shown[-1][1]),
        key=lambda facts: period_start(col(facts.occurred_at), period),
        next_cursor=cursors.encode(period.value, keys[-1]) if len(spans) > paging.limit else None,
        period=period,
    )


def _campaign(facts: Facts) -> ColumnElement[str]:
    # '' as a literal, not a bound parameter: PostgreSQL matches GROUP BY expressions by their text
    return binary(func.coalesce(col(facts.campaign), literal_column("''")))


async def _campaigns(session: AsyncSession, *, window: Window, filters: Filters, paging: Paging) -> Groups:
    after = cursors.decode(paging.cursor, GroupBy.CAMPAIGN.value, 1)[0] if paging.cursor is not None else None
    facts = aliased(TransitionRow)
    query = (
        select(_campaign(facts))
        .distinct()
        .where(*between(facts, window.start, window.end), *matching(facts, filters))
    )
    if after is not None:
        query = query.where(_campaign(facts) > after)
    found = list((await session.scalars(query.order_by(_campaign(facts)).limit(paging.limit + 1))).all())
    keys = found[: paging.limit]
    if not keys:
        return Groups(keys=[], start=window.end, end=window.end)

    def bounds(facts: Facts) -> list[ColumnElement[bool]]:
        upto = [_campaign(facts) <= keys[-1]]
        return upto if after is None else [*upto, _campaign(facts) > after]

    return Groups(
        keys=keys,
        start=window.start,
        end=window.end,
        key=_campaign,
        bounds=bounds,
        next_cursor=cursors.encode(GroupBy.CAMPAIGN.value, keys[-1]) if len(found) > paging.limit else None,
    )
