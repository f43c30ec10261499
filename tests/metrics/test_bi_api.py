"""The BI API's contract: bearer tokens, 422s that name the parameter, formats, and its OpenAPI document."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.metrics.conftest import TOKEN
from tests.metrics.dataset import LEADS, OCTOBER

pytestmark = pytest.mark.asyncio(loop_scope="session")
ENDPOINTS = [
    "/v1/funnel",
    "/v1/cohorts?entered=mql&reached=sal",
    "/v1/velocity?from_stage=mql&to_stage=sal",
    "/v1/campaigns/autumn",
    f"/v1/leads/{LEADS['L1']}/history",
    "/v1/transitions",
]


def client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://metrics", headers=headers
    )


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_every_endpoint_answers_only_a_valid_bearer_token(app: FastAPI, path: str) -> None:
    async with client(app) as anonymous:
        refused = [
            await anonymous.get(path),
            await anonymous.get(path, headers={"Authorization": "Bearer not-a-token"}),
            await anonymous.get(path, headers={"Authorization": f"Basic {TOKEN}"}),
            await anonymous.get(path, headers={"Authorization": "Bearer "}),
        ]
        admitted = [
            await anonymous.get(path, headers={"Authorization": f"Bearer {TOKEN}"}),
            await anonymous.get(path, headers={"Authorization": "bearer another-token"}),
        ]

    for response in refused:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in response.json()["detail"]
    assert [response.status_code for response in admitted] == [200, 200]


def problem(response: httpx.Response) -> tuple[str, str]:
    """The parameter a 422 names and what it says."""
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    return error["loc"][-1], error["msg"]


@pytest.mark.parametrize(
    ("path", "params", "parameter", "says"),
    [
        ("/v1/funnel", {"from": "2026-10-01T00:00:00"}, "from", "no UTC offset"),
        ("/v1/funnel", {"to": "next tuesday"}, "to", "not an ISO-8601 date-time"),
        ("/v1/funnel", {"from": "9999-12-01T00:00:00Z", "group_by": "month"}, "from", "must lie in [1970"),
        (
            "/v1/funnel",
            {"from": "2026-11-01T00:00:00Z", "to": "2026-10-01T00:00:00Z"},
            "from",
            "earlier than `to`",
        ),
        (
            "/v1/funnel",
            {"from": "2026-10-01T00:00:00Z", "to": "2026-10-01T00:00:00Z"},
            "from",
            "earlier than `to`",
        ),
        ("/v1/funnel", {"group_by": "year"}, "group_by", "'day', 'week', 'month' or 'campaign'"),
        ("/v1/funnel", {"base": "prospect"}, "base", "'subscriber'"),
        ("/v1/funnel", {"base": "nurture"}, "base", "must be a funnel stage"),
        ("/v1/funnel", {"source_system": "myspace"}, "source_system", "'hubspot'"),
        ("/v1/funnel", {"limit": 1001}, "limit", "less than or equal to 1000"),
        ("/v1/funnel", {"limit": 0}, "limit", "greater than or equal to 1"),
        ("/v1/funnel", {"format": "xml"}, "format", "'json', 'csv' or 'ndjson'"),
        (
            "/v1/funnel",
            {"group_by": "day", "cursor": "garbage"},
            "cursor",
            "not a cursor this query returned",
        ),
        (
            "/v1/funnel",
            {"cursor": "WyJkYXkiLCAiMjAyNi0xMC0wNSJd"},
            "cursor",
            "not a cursor this query returned",
        ),
        ("/v1/cohorts", {"reached": "sal"}, "entered", "Field required"),
        ("/v1/cohorts", {"entered": "sal", "reached": "sal"}, "reached", "must differ from `entered`"),
        (
            "/v1/cohorts",
            {"entered": "mql", "reached": "sal", "within_days": 0},
            "within_days",
            "greater than",
        ),
        (
            "/v1/cohorts",
            {"entered": "mql", "reached": "sal", "period": "campaign"},
            "period",
            "'day', 'week'",
        ),
        (
            "/v1/velocity",
            {"from_stage": "mql", "to_stage": "mql"},
            "to_stage",
            "must differ from `from_stage`",
        ),
        ("/v1/velocity", {"from_stage": "mql"}, "to_stage", "Field required"),
        ("/v1/transitions", {"stage": "won"}, "stage", "'subscriber'"),
        (
            "/v1/transitions",
            {"cursor": "WyJkYXkiLCAiMjAyNi0xMC0wNSJd"},
            "cursor",
            "not a cursor this query returned",
        ),
        ("/v1/campaigns/autumn", {"group_by": "campaign"}, "group_by", "'day', 'week' or 'month'"),
        ("/v1/leads/L1/history", {}, "lead_id", "valid UUID"),
    ],
)
async def test_an_invalid_parameter_is_a_422_naming_it_and_why(
    api: httpx.AsyncClient, path: str, params: dict[str, Any], parameter: str, says: str
) -> None:
    name, message = problem(await api.get(path, params=params))

    assert name == parameter
    assert says in message


async def test_a_cursor_from_another_query_is_refused(api: httpx.AsyncClient) -> None:
    export = await api.get("/v1/transitions", params={**OCTOBER, "limit": 1})
    weekly = await api.get("/v1/funnel", params={**OCTOBER, "group_by": "week", "limit": 1})

    assert (
        problem(
            await api.get(
                "/v1/funnel", params={**OCTOBER, "group_by": "week", "cursor": export.json()["next_cursor"]}
            )
        )[0]
        == "cursor"
    )
    assert (
        problem(
            await api.get(
                "/v1/funnel", params={**OCTOBER, "group_by": "day", "cursor": weekly.json()["next_cursor"]}
            )
        )[0]
        == "cursor"
    )


async def test_an_offset_sent_unencoded_is_still_read(api: httpx.AsyncClient) -> None:
    # "+02:00" typed into a URL arrives as " 02:00"
    response = await api.get("/v1/funnel?from=2026-10-01T02:00:00+02:00&to=2026-11-01T00:00:00Z")

    assert response.status_code == 200, response.text
    assert response.json()["window"]["from"] == "2026-10-01T00:00:00Z"


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        (None, {}, "application/json"),
        ("*/*", {}, "application/json"),
        ("text/csv", {}, "text/csv; charset=utf-8"),
        ("application/x-ndjson", {}, "application/x-ndjson"),
        ("application/ndjson", {}, "application/x-ndjson"),
        ("text/csv;q=0.5, application/json", {}, "application/json"),
        ("application/json;q=0.2, text/csv;q=0.9", {}, "text/csv; charset=utf-8"),
        ("text/html", {}, "application/json"),
        ("text/csv", {"format": "json"}, "application/json"),
        (None, {"format": "csv"}, "text/csv; charset=utf-8"),
    ],
)
async def test_the_format_follows_the_query_then_the_accept_header(
    api: httpx.AsyncClient, accept: str | None, query: dict[str, str], expected: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = await api.get(
        "/v1/velocity", params={**OCTOBER, "from_stage": "mql", "to_stage": "sal", **query}, headers=headers
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == expected


async def test_csv_lists_carry_the_next_cursor_in_headers(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/v1/cohorts", params={**OCTOBER, "entered": "mql", "reached": "sal", "limit": 2, "format": "csv"}
    )

    assert response.text.splitlines() == [
        "period,entered,reached,share,complete",
        "2026-09-28,0,0,,true",
        "2026-10-05,2,1,0.5,true",  # L1 (sal in 4 days), L3 never
    ]
    cursor = response.headers["x-next-cursor"]
    assert (
        response.headers["link"] == f'<{response.request.url.copy_set_param("cursor", cursor)}>; rel="next"'
    )


async def test_the_openapi_document_defines_every_number(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()

    operations = {path: item["get"] for path, item in document["paths"].items()}
    assert set(operations) == {
        "/v1/funnel",
        "/v1/cohorts",
        "/v1/velocity",
        "/v1/campaigns/{campaign}",
        "/v1/leads/{lead_id}/history",
        "/v1/transitions",
    }
    assert "converted S -> T" in operations["/v1/funnel"]["description"]
    assert "within" in operations["/v1/cohorts"]["description"]
    assert "percentile_cont" in operations["/v1/velocity"]["description"]
    for operation in operations.values():
        assert {"200", "401", "422"} <= set(operation["responses"])
        assert "text/csv" in operation["responses"]["200"]["content"]
