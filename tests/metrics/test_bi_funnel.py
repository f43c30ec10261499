"""GET /v1/funnel and /v1/campaigns/{campaign} count what the dataset's docstring says, on both databases.

Every expected number is counted by hand from tests/metrics/dataset.py; the comments say how.
"""

import httpx
import pytest

from tests.metrics.dataset import OCTOBER
from tests.metrics.expect import funnel_rows

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_funnel_of_october_counts_entries_leads_and_conversions(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/funnel", params=OCTOBER)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window"] == {"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
    assert body["base"] == "subscriber" and body["group_by"] is None and body["next_cursor"] is None
    assert funnel_rows(body) == [
        ("subscriber", 5, 5, None, None, 5, 1.0),  # L1 L2 L4 L6 L7
        # lead: L1 L2 L3 L4; from subscriber: L1 L2 L4 (L6's lead is after `to`, L7 skipped lead)
        ("lead", 4, 4, 3, 3 / 5, 3, 3 / 5),
        # mql: L1 L3 L4 L7 and L5 twice; from lead: L1 L3 L4; from subscriber: L1 L4 L7
        ("mql", 6, 5, 3, 3 / 4, 3, 3 / 5),
        # sal: L1 L4 L5 (10-02); from mql: L1 L4 (L5's first October mql, 10-15, is after its sal)
        ("sal", 3, 3, 2, 2 / 5, 2, 2 / 5),
        ("sql", 1, 1, 1, 1 / 3, 1, 1 / 5),  # L4
        ("opportunity", 0, 0, 0, 0.0, 0, 0.0),
        ("customer", 0, 0, 0, None, 0, 0.0),  # no lead entered opportunity: no rate
        ("disqualified", 1, 1, None, None, None, None),  # L3
        ("nurture", 2, 1, None, None, None, None),  # L5 twice
    ]


async def test_overall_conversions_start_from_the_base_stage(api: httpx.AsyncClient) -> None:
    body = (await api.get("/v1/funnel", params={**OCTOBER, "base": "lead"})).json()

    rows = {row["stage"]: (row["converted_from_base"], row["rate_from_base"]) for row in body["rows"]}
    assert rows["subscriber"] == (None, None)
    assert rows["lead"] == (4, 1.0)
    assert rows["mql"] == (3, 3 / 4)  # L1 L3 L4
    assert rows["sal"] == (2, 2 / 4)  # L1 L4
    assert rows["sql"] == (1, 1 / 4)  # L4


async def test_filters_select_the_entries_and_any_later_fact_converts(api: httpx.AsyncClient) -> None:
    spring = (await api.get("/v1/funnel", params={**OCTOBER, "campaign": "spring"})).json()  # L1 L2 L3
    by_owner = (await api.get("/v1/funnel", params={**OCTOBER, "owner_id": "mkt"})).json()
    salesforce = (await api.get("/v1/funnel", params={**OCTOBER, "source_system": "salesforce"})).json()

    assert funnel_rows(spring)[:5] == [
        ("subscriber", 2, 2, None, None, 2, 1.0),
        ("lead", 3, 3, 2, 1.0, 2, 1.0),
        ("mql", 2, 2, 2, 2 / 3, 1, 1 / 2),
        ("sal", 1, 1, 1, 1 / 2, 1, 1 / 2),
        ("sql", 0, 0, 0, 0.0, 0, 0.0),
    ]
    # L6's subscriber has no owner; marketing owns no sal, yet its mqls L1 and L4 converted to the reps' sals
    assert funnel_rows(by_owner)[:4] == [
        ("subscriber", 4, 4, None, None, 4, 1.0),
        ("lead", 4, 4, 3, 3 / 4, 3, 3 / 4),
        ("mql", 6, 5, 3, 3 / 4, 3, 3 / 4),
        ("sal", 0, 0, 2, 2 / 5, 2, 2 / 4),
    ]
    assert funnel_rows(salesforce)[2:5] == [  # L4 and L5
        ("mql", 3, 2, 1, 1.0, 1, 1.0),
        ("sal", 2, 2, 1, 1 / 2, 1, 1.0),
        ("sql", 1, 1, 1, 1 / 2, 1, 1.0),
    ]


async def test_weekly_funnels_count_each_week_and_conversions_until_the_window_ends(
    api: httpx.AsyncClient,
) -> None:
    body = (await api.get("/v1/funnel", params={**OCTOBER, "group_by": "week"})).json()

    weeks = list(dict.fromkeys(row["group"] for row in body["rows"]))
    assert weeks == ["2026-09-28", "2026-10-05", "2026-10-12", "2026-10-19", "2026-10-26"]  # ISO, from Monday
    assert len(body["rows"]) == 5 * 9
    assert funnel_rows(body, "2026-09-28")[3:5] == [  # L5's sal on 10-02; the week is cut at `from`
        ("sal", 1, 1, 0, None, 0, None),
        ("sql", 0, 0, 0, 0.0, 0, None),
    ]
    assert funnel_rows(body, "2026-10-05")[:4] == [
        ("subscriber", 2, 2, None, None, 2, 1.0),
        ("lead", 2, 2, 2, 1.0, 2, 1.0),  # L2's lead is in the next week: still before `to`
        ("mql", 2, 2, 2, 1.0, 1, 1 / 2),
        ("sal", 0, 0, 1, 1 / 2, 1, 1 / 2),
    ]
    # 10-25 is a Sunday: L5's mql that day belongs to the week of 10-19
    assert funnel_rows(body, "2026-10-19")[2:5] == [
        ("mql", 3, 3, 0, None, 0, None),
        ("sal", 1, 1, 1, 1 / 3, 0, None),
        ("sql", 0, 0, 1, 1.0, 0, None),
    ]


async def test_monthly_funnels_cover_partial_months_at_both_ends(api: httpx.AsyncClient) -> None:
    window = {"from": "2026-09-20T00:00:00Z", "to": "2026-11-10T00:00:00Z"}
    body = (await api.get("/v1/funnel", params={**window, "group_by": "month"})).json()

    assert list(dict.fromkeys(row["group"] for row in body["rows"])) == [
        "2026-09-01",
        "2026-10-01",
        "2026-11-01",
    ]
    assert funnel_rows(body, "2026-09-01")[2:4] == [
        ("mql", 1, 1, 0, None, 0, None),
        ("sal", 0, 0, 1, 1.0, 0, None),
    ]
    october = funnel_rows(body, "2026-10-01")
    assert october[1][:5] == ("lead", 4, 4, 4, 4 / 5)  # L6's lead, 11-01 01:00, is now before `to`
    assert october[3][:5] == ("sal", 3, 3, 3, 3 / 5)  # and so is L5's sal of 11-03
    assert funnel_rows(body, "2026-11-01")[1][:3] == ("lead", 1, 1)


async def test_campaign_groups_come_in_code_point_order_page_by_page(api: httpx.AsyncClient) -> None:
    first = await api.get("/v1/funnel", params={**OCTOBER, "group_by": "campaign", "limit": 2})
    second = await api.get(
        "/v1/funnel",
        params={**OCTOBER, "group_by": "campaign", "limit": 2, "cursor": first.json()["next_cursor"]},
    )

    assert [row["group"] for row in first.json()["rows"][::9]] == [None, "autumn"]
    assert [row["group"] for row in second.json()["rows"][::9]] == ["spring"]
    assert second.json()["next_cursor"] is None
    assert funnel_rows(first.json(), None)[:3] == [  # L6 and L7, who have no campaign
        ("subscriber", 2, 2, None, None, 2, 1.0),
        ("lead", 0, 0, 0, 0.0, 0, 0.0),
        ("mql", 1, 1, 0, None, 1, 1 / 2),
    ]
    filtered = (await api.get("/v1/funnel", params={**OCTOBER, "campaign": "spring"})).json()
    assert funnel_rows(second.json(), "spring") == funnel_rows(filtered)


async def test_daily_pages_hold_every_day_once_and_add_up_to_the_window(api: httpx.AsyncClient) -> None:
    days: list[str] = []
    entries: dict[str, int] = {}
    cursor = None
    while True:
        params: dict[str, str | int] = {**OCTOBER, "group_by": "day", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = (await api.get("/v1/funnel", params=params)).json()
        days += list(dict.fromkeys(row["group"] for row in body["rows"]))
        for row in body["rows"]:
            entries[row["stage"]] = entries.get(row["stage"], 0) + row["entries"]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert days == [f"2026-10-{day:02d}" for day in range(1, 32)]
    assert entries == {
        "subscriber": 5, "lead": 4, "mql": 6, "sal": 3, "sql": 1,
        "opportunity": 0, "customer": 0, "disqualified": 1, "nurture": 2,
    }  # fmt: skip


async def test_a_campaign_funnel_runs_from_its_first_fact_until_now(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/campaigns/autumn")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["campaign"] == "autumn"
    assert body["launched_at"] == "2026-09-25T09:00:00Z" == body["window"]["from"]  # L5's first mql
    assert funnel_rows(body)[:5] == [
        ("subscriber", 1, 1, None, None, 1, 1.0),  # L4
        ("lead", 1, 1, 1, 1.0, 1, 1.0),
        ("mql", 4, 2, 1, 1.0, 1, 1.0),  # L4 once, L5 three times
        ("sal", 3, 2, 2, 1.0, 1, 1.0),  # L5's first mql (09-25) came before its sal of 10-02
        ("sql", 1, 1, 1, 1 / 2, 1, 1.0),
    ]
    monthly = (await api.get("/v1/campaigns/autumn", params={"group_by": "month"})).json()
    assert [row["group"] for row in monthly["rows"][:18:9]] == ["2026-09-01", "2026-10-01"]


async def test_an_unknown_campaign_is_not_found(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/campaigns/winter")

    assert response.status_code == 404
    assert "winter" in response.json()["detail"]
