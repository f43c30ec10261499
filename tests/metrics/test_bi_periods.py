"""Periods, percentiles and cursors, and the per-dialect SQL agreeing with Python on both databases."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select
from sqlmodel import col

from onefunnel.metrics.api import cursors
from onefunnel.metrics.api.dialects import binary, period_start, plus_days
from onefunnel.metrics.api.periods import Period, period_of, periods
from onefunnel.metrics.api.velocity import percentile
from onefunnel.metrics.facts import utc
from onefunnel.metrics.tables import TransitionRow
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.settings import DatabaseSettings

MOMENTS = [
    datetime(2026, 10, 25, 23, 59, 59, 999_999, tzinfo=UTC),  # a Sunday's last microsecond
    datetime(2026, 10, 26, 0, 0, tzinfo=UTC),  # the Monday after
    datetime(2026, 12, 31, 12, 30, 0, 250_000, tzinfo=UTC),
    datetime(2027, 1, 1, 0, 0, tzinfo=UTC),  # a Friday: its ISO week began in 2026
    datetime(2028, 2, 29, 8, 0, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # a DST change in Europe: irrelevant in UTC
]


def test_periods_cover_the_window_and_start_on_utc_midnights() -> None:
    weeks = list(
        periods(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 12, 0, 0, 1, tzinfo=UTC), Period.WEEK)
    )
    months = list(periods(datetime(2026, 11, 30, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC), Period.MONTH))

    assert [first.date().isoformat() for first, _ in weeks] == ["2026-09-28", "2026-10-05", "2026-10-12"]
    assert [(a.date().isoformat(), b.date().isoformat()) for a, b in months] == [
        ("2026-11-01", "2026-12-01"),
        ("2026-12-01", "2027-01-01"),
        ("2027-01-01", "2027-02-01"),
    ]
    assert period_of(datetime(2026, 10, 5, 1, tzinfo=UTC).astimezone(), Period.DAY) == datetime(
        2026, 10, 5, tzinfo=UTC
    )


def test_percentiles_interpolate_between_the_closest_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.9) == pytest.approx(3.7)
    assert percentile([float(v) for v in range(1, 11)], 0.9) == pytest.approx(9.1)


def test_a_cursor_is_only_good_for_its_own_kind() -> None:
    token = cursors.encode("transition", "2026-10-05T09:00:00+00:00", "abc")

    assert cursors.decode(token, "transition", 2) == ["2026-10-05T09:00:00+00:00", "abc"]
    for wrong in [cursors.encode("week", "2026-10-05"), "not a cursor", token[:-3], ""]:
        with pytest.raises(RequestValidationError):
            cursors.decode(wrong, "transition", 2)


@pytest.mark.asyncio(loop_scope="session")
async def test_the_sql_of_each_dialect_agrees_with_python(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(database_url=database_url))
    await migrate(engine, service="metrics")
    async with engine.begin() as connection:
        for index, moment in enumerate(MOMENTS):
            await connection.execute(
                TransitionRow.__table__.insert().values(  # type: ignore[attr-defined]
                    event_id=uuid.uuid4(),
                    lead_id=uuid.uuid4(),
                    to_stage="lead",
                    occurred_at=moment,
                    recorded_at=moment,
                    cause_system="hubspot",
                    campaign=["a", "B", "é", "Z", "b", "A"][index],
                )
            )
        occurred = col(TransitionRow.occurred_at)
        rows = (
            await connection.execute(
                select(
                    occurred,
                    period_start(occurred, Period.DAY),
                    period_start(occurred, Period.WEEK),
                    period_start(occurred, Period.MONTH),
                    plus_days(occurred, 1),
                    plus_days(occurred, 30),
                ).order_by(occurred)
            )
        ).all()
        campaigns = (
            await connection.scalars(
                select(binary(col(TransitionRow.campaign))).order_by(binary(col(TransitionRow.campaign)))
            )
        ).all()
    await engine.dispose()

    for moment, day, week, month, tomorrow, month_later in rows:
        moment = utc(moment)
        assert (day, week, month) == tuple(period_of(moment, p).date().isoformat() for p in Period), moment
        assert utc(tomorrow) == moment + timedelta(days=1)
        assert utc(month_later) == moment + timedelta(days=30)
    assert list(campaigns) == ["A", "B", "Z", "a", "b", "é"]
