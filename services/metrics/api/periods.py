"""Periods in UTC: days, ISO weeks (from Monday) and calendar months, listed in Python.

A grouped report has a row for every period its window touches, empty ones included; SQL puts each
fact in its period with `dialects.period_start`, which follows the same definitions.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def period_of(moment: datetime, period: Period) -> datetime:
    """The start (UTC midnight) of the period holding `moment`."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    if period is Period.MONTH:
        return day.replace(day=1)
    return day


def next_period(start: datetime, period: Period) -> datetime:
    if period is Period.DAY:
        return start + timedelta(days=1)
    if period is Period.WEEK:
        return start + timedelta(days=7)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def periods(start: datetime, end: datetime, period: Period) -> Iterator[tuple[datetime, datetime]]:
    """The periods overlapping [start, end), each as its own [start, end)."""
    first = period_of(start, period)
    while first < end:
        following = next_period(first, period)
        yield first, following
        first = following
