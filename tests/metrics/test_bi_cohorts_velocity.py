"""GET /v1/cohorts and /v1/velocity count what the dataset's docstring says, on both databases."""

from typing import Any

import httpx
import pytest

from tests.metrics.dataset import OCTOBER

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUBSCRIBER_TO_MQL = {**OCTOBER, "entered": "subscriber", "reached": "mql"}


def cohorts(body: dict[str, Any]) -> list[tuple[str, int, int, float | None]]:
    return [(row["period"], row["entered"], row["reached"], row["share"]) for row in body["rows"]]


async def test_weekly_cohorts_count_who_reached_the_stage_within_n_days(api: httpx.AsyncClient) -> None:
    body = (await api.get("/v1/cohorts", params={**SUBSCRIBER_TO_MQL, "within_days": 7})).json()

    assert body["period"] == "week" and body["within_days"] == 7
    assert cohorts(body) == [
        ("2026-09-28", 0, 0, None),
        ("2026-10-05", 2, 1, 1 / 2),  # L1 in 3 days; L2 never
        # L7 in 7 days less a microsecond; L4 in exactly 7 days, which is not within 7 days
        ("2026-10-12", 2, 1, 1 / 2),
        ("2026-10-19", 0, 0, None),
        ("2026-10-26", 1, 0, 0.0),  # L6
    ]
    assert all(row["complete"] for row in body["rows"])  # every deadline is before today


async def test_a_longer_deadline_counts_more_and_leaves_cohorts_incomplete(api: httpx.AsyncClient) -> None:
    eight = (await api.get("/v1/cohorts", params={**SUBSCRIBER_TO_MQL, "within_days": 8})).json()
    years = (await api.get("/v1/cohorts", params={**SUBSCRIBER_TO_MQL, "within_days": 3650})).json()

    assert cohorts(eight)[2] == ("2026-10-12", 2, 2, 1.0)
    assert not any(row["complete"] for row in years["rows"])


async def test_a_cohort_may_reach_its_stage_after_the_window(api: httpx.AsyncClient) -> None:
    params: dict[str, str | int] = {**OCTOBER, "entered": "mql", "reached": "sal", "within_days": 30}
    params["period"] = "month"
    body = (await api.get("/v1/cohorts", params=params)).json()
    autumn = (await api.get("/v1/cohorts", params={**params, "campaign": "autumn"})).json()

    # L1 L3 L4 L5 L7; L1 and L4 reached sal in October, L5 on 11-03 (from its October mql of 10-15)
    assert cohorts(body) == [("2026-10-01", 5, 3, 3 / 5)]
    assert cohorts(autumn) == [("2026-10-01", 2, 2, 1.0)]


async def test_cohort_pages_walk_the_periods(api: httpx.AsyncClient) -> None:
    params: dict[str, str | int] = {**SUBSCRIBER_TO_MQL, "within_days": 7, "period": "day", "limit": 20}
    first = (await api.get("/v1/cohorts", params=params)).json()
    second = (await api.get("/v1/cohorts", params={**params, "cursor": first["next_cursor"]})).json()

    periods = [row["period"] for row in first["rows"] + second["rows"]]
    assert periods == [f"2026-10-{day:02d}" for day in range(1, 32)]
    assert second["next_cursor"] is None
    assert sum(row["entered"] for row in first["rows"] + second["rows"]) == 5


async def test_velocity_takes_median_and_p90_from_first_entry_to_first_later_entry(
    api: httpx.AsyncClient,
) -> None:
    body = (await api.get("/v1/velocity", params={**OCTOBER, "from_stage": "mql", "to_stage": "sal"})).json()

    # first mql ever in October: L1 L3 L4 L7 (L5's was in September); L1 took 4 days, L4 25 hours
    assert body["rows"] == [
        {
            "from_stage": "mql",
            "to_stage": "sal",
            "leads": 4,
            "reached": 2,
            "median_seconds": 90_000 + (345_600 - 90_000) * 0.5,
            "p90_seconds": 90_000 + (345_600 - 90_000) * 0.9,
        }
    ]
    assert body["next_cursor"] is None


async def test_velocity_counts_only_arrivals_before_the_window_ends(api: httpx.AsyncClient) -> None:
    body = (
        await api.get("/v1/velocity", params={**OCTOBER, "from_stage": "subscriber", "to_stage": "lead"})
    ).json()
    spring = (
        await api.get(
            "/v1/velocity",
            params={**OCTOBER, "from_stage": "subscriber", "to_stage": "lead", "campaign": "spring"},
        )
    ).json()

    # L4 1 hour, L1 1 day, L2 8 days 3 hours; L6's lead is after `to`, L7 never entered lead
    row = body["rows"][0]
    assert (row["leads"], row["reached"]) == (5, 3)
    assert row["median_seconds"] == 86_400
    assert row["p90_seconds"] == pytest.approx(86_400 + (702_000 - 86_400) * 0.8)
    assert (spring["rows"][0]["leads"], spring["rows"][0]["median_seconds"]) == (2, (86_400 + 702_000) / 2)


async def test_velocity_of_a_stage_nobody_reached_has_no_percentiles(api: httpx.AsyncClient) -> None:
    body = (
        await api.get("/v1/velocity", params={**OCTOBER, "from_stage": "sql", "to_stage": "customer"})
    ).json()

    assert body["rows"][0] == {
        "from_stage": "sql",
        "to_stage": "customer",
        "leads": 1,
        "reached": 0,
        "median_seconds": None,
        "p90_seconds": None,
    }
