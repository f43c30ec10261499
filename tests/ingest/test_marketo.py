import json
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from onefunnel.ingest.platforms.base import Delivery, InvalidPayload, Unauthorized, delivery_hash, event_id
from onefunnel.ingest.platforms.marketo import PAYLOAD_TEMPLATE, Marketo
from onefunnel.shared.events import Changes, ObjectType, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import load_stage_mapping
from onefunnel.shared.stages import Stage

TOKEN = "Zr8mXq3f0Jw5t9Yc2bNvLk7HsPdGe4Ua"
CHICAGO = ZoneInfo("America/Chicago")
RECEIVED_AT = datetime(2024, 5, 6, 14, 15, 2, tzinfo=UTC)
MAPPING = load_stage_mapping()
DOC = Path(__file__).resolve().parents[2] / "docs" / "platforms" / "marketo.md"
TOKEN_PATTERN = re.compile(r"\{\{([^}]+)\}\}")
LEAD: dict[str, str | int | None] = {
    "lead.Id": 318581,
    "lead.Email Address": "jane.doe@example.com",
    "lead.Lead Status": "MQL",
    "lead.Lead Score": 72,
    "lead.Lead Source": "Web Form",
    "lead.Lead Owner Email Address": "sam.seller@example.com",
    "program.Name": "2024 Q2 Webinar",
    "campaign.id": 1042,
    "system.dateTime": "2024-05-06 09:15:00",
}


def render(values: dict[str, str | int | None]) -> bytes:
    """Fill PAYLOAD_TEMPLATE as Marketo does with Request Token Encoding JSON.

    Strings are enclosed in double quotes and JSON-escaped, an empty one being "" (Snowplow's Marketo
    fixture); numbers are written bare, an empty one as nothing (None here).
    """

    def token(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        return "" if value is None else str(value)

    return TOKEN_PATTERN.sub(token, PAYLOAD_TEMPLATE).encode()


def delivery(
    body: bytes, *, headers: dict[str, str] | None = None, query: dict[str, str] | None = None
) -> Delivery:
    return Delivery(
        method="POST",
        url="https://ingest.example.com/webhooks/marketo",
        headers={"content-type": "application/json", **(headers or {})},
        query=query or {},
        body=body,
        received_at=RECEIVED_AT,
    )


def marketo(*tokens: str) -> Marketo:
    return Marketo(tokens=list(tokens) or [TOKEN], time_zone=CHICAGO)


def test_marketo_template_in_the_docs_is_the_one_the_code_parses() -> None:
    assert f"```json\n{PAYLOAD_TEMPLATE}\n```" in DOC.read_text()


def test_marketo_template_leaves_string_tokens_for_marketo_to_quote() -> None:
    assert not re.search(r'"\{\{', PAYLOAD_TEMPLATE)
    assert set(TOKEN_PATTERN.findall(PAYLOAD_TEMPLATE)) == set(LEAD)


def test_marketo_reads_a_rendered_template_as_a_lead_snapshot() -> None:
    [event] = marketo().normalize(delivery(render(LEAD)), MAPPING).events
    assert event.source is SourceSystem.MARKETO
    assert (event.object_type, event.object_id) == (ObjectType.LEAD, "318581")
    assert event.event_type is SourceEventType.CHANGED
    assert event.changes == Changes(
        stage=Stage.MQL,
        stage_raw="MQL",
        status="MQL",
        score=72.0,
        owner_id="sam.seller@example.com",
        email="jane.doe@example.com",
        campaign="2024 Q2 Webinar",
        lead_source="Web Form",
    )
    assert event.received_at == RECEIVED_AT


def test_marketo_reads_the_date_time_in_the_subscriptions_summer_time_zone() -> None:
    [event] = marketo().normalize(delivery(render(LEAD)), MAPPING).events
    assert event.occurred_at == datetime(2024, 5, 6, 14, 15, tzinfo=UTC)


def test_marketo_reads_the_date_time_in_the_subscriptions_winter_time_zone() -> None:
    body = render({**LEAD, "system.dateTime": "2024-01-15 09:15:00"})
    [event] = marketo().normalize(delivery(body), MAPPING).events
    assert event.occurred_at == datetime(2024, 1, 15, 15, 15, tzinfo=UTC)


def test_marketo_reports_empty_tokens_as_not_reported() -> None:
    empty: dict[str, str | int | None] = {
        **LEAD,
        "lead.Email Address": "",
        "lead.Lead Status": "",
        "lead.Lead Score": None,
        "lead.Lead Source": "",
        "lead.Lead Owner Email Address": "",
        "program.Name": "",
    }
    [event] = marketo().normalize(delivery(render(empty)), MAPPING).events
    assert event.object_id == "318581"
    assert event.changes == Changes()


def test_marketo_reads_tokens_rendered_as_null() -> None:
    body = render(LEAD).replace(b'"lead_status": "MQL"', b'"lead_status": null')
    [event] = marketo().normalize(delivery(body), MAPPING).events
    assert (event.changes.status, event.changes.stage) == (None, None)


def test_marketo_reads_string_values_that_need_json_escaping() -> None:
    body = render({**LEAD, "program.Name": 'Webinar "Pricing" - Köln\\2024'})
    [event] = marketo().normalize(delivery(body), MAPPING).events
    assert event.changes.campaign == 'Webinar "Pricing" - Köln\\2024'


def test_marketo_keeps_an_unmapped_lead_status_raw_without_guessing_a_stage() -> None:
    body = render({**LEAD, "lead.Lead Status": "Event Attendee"})
    [event] = marketo().normalize(delivery(body), MAPPING).events
    assert (event.changes.stage, event.changes.stage_raw, event.changes.status) == (
        None,
        "Event Attendee",
        "Event Attendee",
    )


def test_marketo_keys_a_call_by_a_hash_of_its_rendered_body() -> None:
    body = render(LEAD)
    [event] = marketo().normalize(delivery(body), MAPPING).events
    assert event.idempotency_key == delivery_hash(body)
    assert event.id == event_id(SourceSystem.MARKETO, delivery_hash(body))


def test_marketo_gives_the_next_call_for_the_same_lead_another_key() -> None:
    [first] = marketo().normalize(delivery(render(LEAD)), MAPPING).events
    [later] = (
        marketo()
        .normalize(delivery(render({**LEAD, "system.dateTime": "2024-05-06 09:16:00"})), MAPPING)
        .events
    )
    assert first.idempotency_key != later.idempotency_key


def test_marketo_accepts_the_token_in_the_header() -> None:
    marketo().verify(delivery(render(LEAD), headers={"x-onefunnel-token": TOKEN}))


def test_marketo_accepts_the_token_in_the_query_when_no_header_is_set() -> None:
    marketo().verify(delivery(render(LEAD), query={"token": TOKEN}))


def test_marketo_accepts_the_second_token_during_a_rotation() -> None:
    marketo("the-new-token-0f9c2d", TOKEN).verify(
        delivery(render(LEAD), headers={"x-onefunnel-token": TOKEN})
    )


def test_marketo_rejects_a_wrong_token() -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        marketo().verify(delivery(render(LEAD), headers={"x-onefunnel-token": TOKEN[:-1] + "x"}))


def test_marketo_rejects_a_wrong_header_even_with_a_right_query_token() -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        marketo().verify(
            delivery(render(LEAD), headers={"x-onefunnel-token": "wrong"}, query={"token": TOKEN})
        )


def test_marketo_rejects_a_request_without_a_token() -> None:
    with pytest.raises(Unauthorized, match="missing"):
        marketo().verify(delivery(render(LEAD)))


def test_marketo_rejects_a_token_with_characters_outside_ascii() -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        marketo().verify(delivery(render(LEAD), headers={"x-onefunnel-token": "tökén"}))


def test_marketo_rejects_everything_when_no_token_is_configured() -> None:
    with pytest.raises(Unauthorized, match="no Marketo webhook token"):
        Marketo(tokens=[], time_zone=CHICAGO).verify(
            delivery(render(LEAD), headers={"x-onefunnel-token": TOKEN})
        )


def test_marketo_refuses_an_empty_token() -> None:
    with pytest.raises(ValueError, match="empty"):
        Marketo(tokens=[TOKEN, ""], time_zone=CHICAGO)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"lead_id=318581&email=jane.doe%40example.com", "not JSON"),
        (PAYLOAD_TEMPLATE.encode(), "not JSON"),
        (b"[318581]", "JSON object"),
        (render({**LEAD, "lead.Id": None}), "lead_id"),
        (render({**LEAD, "lead.Id": "318581"}), "lead_id"),
        (render({**LEAD, "system.dateTime": ""}), "YYYY-MM-DD"),
        (render({**LEAD, "system.dateTime": "Aug 08, 2013"}), "YYYY-MM-DD"),
        (render(LEAD).replace(b'"date_time"', b'"when"'), "date_time is missing"),
    ],
)
def test_marketo_rejects_a_body_that_is_not_the_rendered_template(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        marketo().normalize(delivery(body), MAPPING)
