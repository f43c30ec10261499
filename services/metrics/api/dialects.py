"""The SQL that differs between SQLite and PostgreSQL, compiled explicitly for each (and tested on both).

- `period_start(moment, period)`: the first day, as 'YYYY-MM-DD' text, of the UTC period (day, ISO
  week from Monday, calendar month) holding `moment`.
- `plus_days(moment, days)`: the moment exactly `days` x 24 hours later.
- `binary(text)`: `text` compared and sorted by code point, whatever the database's collation.

SQLite keeps the UTC times of `DateTime(timezone=True)` columns as 'YYYY-MM-DD HH:MM:SS.ffffff' text;
PostgreSQL as timestamptz, read here `AT TIME ZONE 'UTC'` so the session's TimeZone never matters.
"""

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, Integer, String, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from onefunnel.metrics.api.periods import Period

_Expression = ColumnElement[Any] | Mapped[Any]


class _PeriodStart(FunctionElement[str]):
    type = String()
    inherit_cache = True
    period: ClassVar[Period]


class _DayStart(_PeriodStart):
    inherit_cache = True
    period = Period.DAY


class _WeekStart(_PeriodStart):
    inherit_cache = True
    period = Period.WEEK


class _MonthStart(_PeriodStart):
    inherit_cache = True
    period = Period.MONTH


_STARTS: dict[Period, type[_PeriodStart]] = {p.period: p for p in (_DayStart, _WeekStart, _MonthStart)}


def period_start(moment: _Expression, period: Period) -> ColumnElement[str]:
    """SQL: the first day ('YYYY-MM-DD') of the UTC period holding `moment`."""
    return _STARTS[period](moment)


class _PlusDays(FunctionElement[datetime]):
    type = DateTime(timezone=True)
    inherit_cache = True


def plus_days(moment: _Expression, days: int) -> ColumnElement[datetime]:
    """SQL: `moment` plus `days` x 24 hours."""
    return _PlusDays(moment, bindparam("days", days, type_=Integer, unique=True))


@compiles(_PeriodStart, "postgresql")
def _period_start_postgresql(element: _PeriodStart, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    # date_trunc('week') starts on Monday, as ISO weeks do
    return f"to_char(date_trunc('{element.period}', {moment} AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"


@compiles(_PeriodStart, "sqlite")
def _period_start_sqlite(element: _PeriodStart, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    if element.period is Period.WEEK:
        # the day's next Sunday (or itself), back to its Monday; only the date part is read, as SQLite
        # rounds fractions of a second to milliseconds, so 23:59:59.9999 would be the next day
        return f"date(substr({moment}, 1, 10), 'weekday 0', '-6 days')"
    if element.period is Period.MONTH:
        return f"(substr({moment}, 1, 7) || '-01')"
    return f"substr({moment}, 1, 10)"


@compiles(_PlusDays, "postgresql")
def _plus_days_postgresql(element: _PlusDays, compiler: SQLCompiler, **kw: Any) -> str:
    moment, days = (compiler.process(clause, **kw) for clause in element.clauses)
    # hours, not days: a day interval would follow the session time zone's DST changes
    return f"({moment} + CAST({days} AS INTEGER) * INTERVAL '24 hours')"


@compiles(_PlusDays, "sqlite")
def _plus_days_sqlite(element: _PlusDays, compiler: SQLCompiler, **kw: Any) -> str:
    moment, days = (compiler.process(clause, **kw) for clause in element.clauses)
    # shift the date part only and keep the stored time text, so microseconds compare exactly
    return f"(date(substr({moment}, 1, 10), '+' || {days} || ' days') || substr({moment}, 11))"


class _Binary(FunctionElement[str]):
    type = String()
    inherit_cache = True


def binary(text: _Expression) -> ColumnElement[str]:
    """SQL: `text`, compared and ordered by code point (identically on both databases)."""
    return _Binary(text)


@compiles(_Binary, "postgresql")
def _binary_postgresql(element: _Binary, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)} COLLATE "C")'


@compiles(_Binary, "sqlite")
def _binary_sqlite(element: _Binary, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} COLLATE BINARY)"
