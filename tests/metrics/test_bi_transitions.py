"""GET /v1/transitions and /v1/leads/{lead_id}/history page through the facts, in JSON, CSV and NDJSON."""

import csv
import io
import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.metrics.dataset import LEADS, OCTOBER, transitions

pytestmark = pytest.mark.asyncio(loop_scope="session")
OCTOBER_IDS = {
    str(event.id)
    for event in transitions()
    if datetime.fromisoformat(OCTOBER["from"]) <= event.occurred_at < datetime.fromisoformat(OCTOBER["to"])
}


async def walk(api: httpx.AsyncClient, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of every page, following the cursor the response gives for its format."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        if params.get("format") == "csv":
            rows += list(csv.DictReader(io.StringIO(response.text)))
            cursor = response.headers.get("x-next-cursor")
        elif params.get("format") == "ndjson":
            rows += [json.loads(line) for line in response.text.splitlines()]
            cursor = response.headers.get("x-next-cursor")
        else:
            rows += response.json()["rows"]
            cursor = response.json()["next_cursor"]
            assert cursor == response.headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in response.headers
            return rows
        assert (
            response.headers["link"].endswith('>; rel="next"')
            and f"cursor={cursor}" in response.headers["link"]
        )


@pytest.mark.parametrize("format", ["json", "csv", "ndjson"])
async def test_walking_the_pages_returns_every_fact_of_the_window_once_in_order(
    api: httpx.AsyncClient, format: str
) -> None:
    # limit 2: L1's and L2's subscribers, at the same instant, fall on two pages
    rows = await walk(api, "/v1/transitions", {**OCTOBER, "limit": 2, "format": format})

    assert len(rows) == 22 and {row["event_id"] for row in rows} == OCTOBER_IDS
    keys = [(row["occurred_at"], row["event_id"]) for row in rows]
    assert keys == sorted(keys)


async def test_a_csv_export_has_a_header_and_one_line_per_fact(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/v1/transitions", params={**OCTOBER, "stage": "mql"}, headers={"Accept": "text/csv"}
    )

    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    lines = response.text.splitlines()
    assert lines[0] == (
        "event_id,lead_id,from_stage,to_stage,occurred_at,recorded_at,cause_system,campaign,lead_source,"
        "origin_system,owner_id"
    )
    assert len(lines) == 1 + 6  # L1 L3 L4 L7, L5 twice
    last = list(csv.DictReader(io.StringIO(response.text)))[-1]
    assert last == {
        "event_id": last["event_id"],
        "lead_id": str(LEADS["L5"]),
        "from_stage": "nurture",
        "to_stage": "mql",
        "occurred_at": "2026-10-25T09:00:00Z",
        "recorded_at": "2026-10-25T09:00:59Z",
        "cause_system": "hubspot",
        "campaign": "autumn",
        "lead_source": "",
        "origin_system": "salesforce",
        "owner_id": "mkt",
    }


async def test_an_ndjson_export_is_one_json_object_per_line(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/v1/transitions",
        params={**OCTOBER, "campaign": "spring"},
        headers={"Accept": "application/x-ndjson"},
    )

    assert response.headers["content-type"] == "application/x-ndjson"
    facts = [json.loads(line) for line in response.text.splitlines()]
    assert len(facts) == 9  # L1 4, L2 2, L3 3
    assert facts[-1]["to_stage"] == "disqualified" and facts[-1]["occurred_at"] == "2026-10-20T10:00:00Z"


async def test_a_lead_history_is_its_whole_trail_oldest_first(api: httpx.AsyncClient) -> None:
    rows = await walk(api, f"/v1/leads/{LEADS['L5']}/history", {"limit": 3})

    assert [(row["from_stage"], row["to_stage"], row["occurred_at"][:10]) for row in rows] == [
        (None, "mql", "2026-09-25"),
        ("mql", "sal", "2026-10-02"),
        ("sal", "nurture", "2026-10-10"),
        ("nurture", "mql", "2026-10-15"),
        ("mql", "nurture", "2026-10-18"),
        ("nurture", "mql", "2026-10-25"),
        ("mql", "sal", "2026-11-03"),
    ]
    csv_rows = await walk(api, f"/v1/leads/{LEADS['L5']}/history", {"limit": 5, "format": "csv"})
    assert [row["event_id"] for row in csv_rows] == [row["event_id"] for row in rows]


async def test_the_history_of_an_unknown_lead_is_not_found(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/leads/00000000-0000-0000-0000-000000000000/history")

    assert response.status_code == 404
    assert "00000000-0000-0000-0000-000000000000" in response.json()["detail"]
