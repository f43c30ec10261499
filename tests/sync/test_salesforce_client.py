"""The Salesforce client against the fake Salesforce, and the fake's Outbound Messages in real ingest.

Waits are compressed (`initial_wait`, `limit_wait`, webhook retry delays of milliseconds) so the
storms and retries the tests provoke take no real time.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from onefunnel.ingest.app import create_app
from onefunnel.ingest.platforms.salesforce_outbound import ACKNOWLEDGEMENT, parse_outbound_message
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, open_bus
from onefunnel.shared.events import ObjectType, SourceEvent
from onefunnel.shared.settings import BusKind, BusSettings, TopicSettings
from onefunnel.shared.stage_mapping import load_stage_mapping
from onefunnel.shared.stages import Stage
from onefunnel.simulators.salesforce import FakeSalesforce
from onefunnel.sync.platforms.base import PlatformError, RateLimited, StageWrite
from onefunnel.sync.platforms.salesforce import PLACEHOLDER, ApiUsage, SalesforceClient, soql_string
from onefunnel.sync.platforms.throttle import Throttle
from tests.ingest import deliveries

pytestmark = pytest.mark.asyncio(loop_scope="session")
BASE = "https://fake.my.salesforce.com"
OUTBOUND_TOKEN = "outbound-url-token"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSalesforce]:
    fake = FakeSalesforce(instance_url=BASE)
    yield fake
    await fake.aclose()


@pytest.fixture
async def http(fake: FakeSalesforce) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http:
        yield http


def salesforce(
    fake: FakeSalesforce,
    http: httpx.AsyncClient,
    *,
    client_secret: str | None = None,
    attempts: int = 4,
    limit_wait: float = 0.001,
) -> SalesforceClient:
    return SalesforceClient(
        http=http,
        client_id=fake.client_id,
        client_secret=client_secret or fake.client_secret,
        throttle=Throttle(per_second=1000, burst=100, concurrency=10),
        login_url=BASE,
        attempts=attempts,
        initial_wait=0.001,
        max_wait=0.05,
        limit_wait=limit_wait,
    )


def calls(fake: FakeSalesforce, method: str) -> list[int]:
    """The statuses of the calls the fake received with this method (token requests excluded)."""
    return [c.status for c in fake.calls if c.method == method and c.path.startswith("/services/data/")]


async def found(client: SalesforceClient, email: str) -> str | None:
    """The record of one email, as sync's lookup of many tells it."""
    return (await client.find_by_emails([email])).get(email.casefold())


async def test_a_created_lead_carries_the_placeholders_and_is_found_by_its_email(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)

    lead_id = await client.create(email="ada@example.com", stage_value="Open - Not Contacted")

    lead = fake.snapshot()["Lead"][lead_id]
    assert (lead["LastName"], lead["Company"]) == (PLACEHOLDER, PLACEHOLDER)
    assert (lead["Email"], lead["Status"]) == ("ada@example.com", "Open - Not Contacted")
    assert lead["LastModifiedById"] == fake.integration_user_id
    assert await found(client, "ADA@example.com") == lead_id  # SOQL compares text case-insensitively
    assert await found(client, "nobody@example.com") is None


async def test_quotes_and_backslashes_in_an_email_cannot_change_the_query(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)
    tricky = "o'brien\\\"x@example.com"
    lead_id = await client.create(email=tricky, stage_value="Open - Not Contacted")
    await client.create(email="eve@example.com", stage_value="Open - Not Contacted")

    assert soql_string("a'b\\c") == "a\\'b\\\\c"
    assert await found(client, tricky) == lead_id
    assert await found(client, "x' OR Email != '") is None
    assert await found(client, "\\") is None


async def test_an_open_lead_is_preferred_over_a_converted_one_with_the_same_email(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)
    converted = fake.user_creates_lead("bob@example.com")
    fake.user_converts(converted)
    assert await found(client, "bob@example.com") == converted

    open_lead = fake.user_creates_lead("bob@example.com")

    assert await found(client, "bob@example.com") == open_lead


async def test_many_emails_are_looked_up_in_one_query(fake: FakeSalesforce, http: httpx.AsyncClient) -> None:
    client = salesforce(fake, http)
    converted = fake.user_creates_lead("bob@example.com")
    fake.user_converts(converted)
    bob = fake.user_creates_lead("Bob@Example.com")
    ada = fake.user_creates_lead("ada@example.com")
    tricky = fake.user_creates_lead("o'brien@example.com")

    found = await client.find_by_emails(
        ["bob@example.com", "ADA@example.com", "o'brien@example.com", "x@y.z"]
    )

    assert found == {"bob@example.com": bob, "ada@example.com": ada, "o'brien@example.com": tricky}
    assert calls(fake, "GET") == [200]


async def test_a_status_moves_forward_and_back_with_one_patch_each(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)
    lead_id = fake.user_creates_lead("ada@example.com")

    await client.write_stage(record_id=lead_id, stage_value="Working - Contacted", backward=False)
    await client.write_stage(record_id=lead_id, stage_value="Open - Not Contacted", backward=True)

    assert calls(fake, "PATCH") == [204, 204]
    lead = fake.snapshot()["Lead"][lead_id]
    assert (lead["Status"], lead["LastModifiedById"]) == ("Open - Not Contacted", fake.integration_user_id)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("Qualified", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ("Closed - Converted", "FIELD_INTEGRITY_EXCEPTION"),  # conversion is a separate operation
    ],
)
async def test_a_status_salesforce_refuses_is_a_permanent_error_with_its_code(
    fake: FakeSalesforce, http: httpx.AsyncClient, status: str, code: str
) -> None:
    client = salesforce(fake, http)
    lead_id = fake.user_creates_lead("ada@example.com")

    with pytest.raises(PlatformError) as refused:
        await client.write_stage(record_id=lead_id, stage_value=status, backward=False)

    assert (refused.value.retriable, refused.value.status, refused.value.code) == (False, 400, code)
    assert calls(fake, "PATCH") == [400]  # never retried
    with pytest.raises(PlatformError) as on_create:
        await client.create(email="eve@example.com", stage_value=status)
    assert on_create.value.code == code


async def test_many_leads_move_in_one_collection_call_each_saved_or_refused_alone(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)
    leads = [fake.user_creates_lead(f"grace{n}@example.com") for n in range(3)]
    fake.user_converts(leads[1])  # read-only now
    writes = [StageWrite(lead, "Working - Contacted") for lead in leads]

    outcomes = await client.write_stages([*writes, StageWrite("00Q5g0000000000AAA", "Working - Contacted")])

    assert calls(fake, "PATCH") == [200]
    assert outcomes[0] is None and outcomes[2] is None
    assert [(o.code, o.retriable) for o in outcomes[1::2] if o is not None] == [
        ("CANNOT_UPDATE_CONVERTED_LEAD", False),
        ("NOT_FOUND", False),
    ]
    snapshot = fake.snapshot()["Lead"]
    assert [snapshot[lead]["Status"] for lead in leads] == [
        "Working - Contacted",
        "Closed - Converted",
        "Working - Contacted",
    ]
    assert snapshot[leads[0]]["LastModifiedById"] == fake.integration_user_id


async def test_a_collection_holds_at_most_200_leads(fake: FakeSalesforce, http: httpx.AsyncClient) -> None:
    client = salesforce(fake, http)
    leads = [fake.user_creates_lead(f"alan{n}@example.com") for n in range(201)]

    outcomes = await client.write_stages([StageWrite(lead, "Working - Contacted") for lead in leads])

    assert outcomes == [None] * 201
    assert calls(fake, "PATCH") == [200, 200]
    credentials = {"grant_type": "client_credentials", "client_id": fake.client_id}
    token = (
        await http.post(
            f"{BASE}/services/oauth2/token", data=credentials | {"client_secret": fake.client_secret}
        )
    ).json()["access_token"]
    too_many = await http.patch(
        f"{BASE}/services/data/v62.0/composite/sobjects",
        json={"records": [{"attributes": {"type": "Lead"}, "id": lead, "Status": "x"} for lead in leads]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert too_many.status_code == 400


async def test_a_converted_lead_is_read_only(fake: FakeSalesforce, http: httpx.AsyncClient) -> None:
    client = salesforce(fake, http)
    lead_id = fake.user_creates_lead("ada@example.com")
    fake.user_converts(lead_id)

    with pytest.raises(PlatformError) as refused:
        await client.write_stage(record_id=lead_id, stage_value="Working - Contacted", backward=True)

    assert (refused.value.retriable, refused.value.code) == (False, "CANNOT_UPDATE_CONVERTED_LEAD")
    assert fake.snapshot()["Lead"][lead_id]["Status"] == "Closed - Converted"


async def test_a_missing_lead_is_a_permanent_not_found(fake: FakeSalesforce, http: httpx.AsyncClient) -> None:
    client = salesforce(fake, http)

    with pytest.raises(PlatformError) as refused:
        await client.write_stage(
            record_id="00Q5g0000000000AAA", stage_value="Working - Contacted", backward=False
        )

    assert (refused.value.retriable, refused.value.status, refused.value.code) == (False, 404, "NOT_FOUND")


async def test_the_token_is_fetched_lazily_and_once_for_concurrent_calls(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)
    assert fake.calls == []

    await asyncio.gather(*(found(client, f"p{n}@example.com") for n in range(5)))

    assert [c.path for c in fake.calls].count("/services/oauth2/token") == 1


async def test_an_expired_session_is_renewed_once_and_the_call_repeated(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)
    lead_id = await client.create(email="ada@example.com", stage_value="Open - Not Contacted")
    fake.expire_tokens()

    await client.write_stage(record_id=lead_id, stage_value="Working - Contacted", backward=False)

    assert [c.path for c in fake.calls].count("/services/oauth2/token") == 2
    assert calls(fake, "PATCH") == [401, 204]


async def test_wrong_client_credentials_are_a_permanent_invalid_client_error(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http, client_secret="not-the-secret")

    with pytest.raises(PlatformError) as refused:
        await found(client, "ada@example.com")

    assert (refused.value.retriable, refused.value.status, refused.value.code) == (
        False,
        400,
        "invalid_client",
    )
    assert [c.status for c in fake.calls] == [400]
    assert await client.ready() is False
    assert await salesforce(fake, http).ready() is True


async def test_a_request_limit_storm_is_waited_out_and_the_call_succeeds(
    fake: FakeSalesforce, http: httpx.AsyncClient
) -> None:
    client = salesforce(fake, http)
    lead_id = fake.user_creates_lead("ada@example.com")
    fake.inject_rate_limit(2)

    await client.write_stage(record_id=lead_id, stage_value="Working - Contacted", backward=False)

    assert calls(fake, "PATCH") == [403, 403, 204]


async def test_an_exhausted_daily_allocation_is_rate_limited_with_the_configured_wait() -> None:
    fake = FakeSalesforce(instance_url=BASE, api_limit=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http:
        client = salesforce(fake, http, attempts=2, limit_wait=0.002)
        await found(client, "ada@example.com")

        with pytest.raises(RateLimited) as limited:
            await found(client, "ada@example.com")

    assert (limited.value.status, limited.value.code, limited.value.retry_after) == (
        403,
        "REQUEST_LIMIT_EXCEEDED",
        0.002,
    )
    assert calls(fake, "GET") == [200, 403, 403]
    assert client.api_usage == ApiUsage(used=1, limit=1)


async def test_transient_server_errors_are_retried(fake: FakeSalesforce, http: httpx.AsyncClient) -> None:
    client = salesforce(fake, http)
    fake.inject_errors(503, 2)

    assert await found(client, "ada@example.com") is None

    assert calls(fake, "GET") == [503, 503, 200]


async def test_an_unreachable_salesforce_is_a_retriable_error_after_the_attempts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        client = salesforce(FakeSalesforce(), http, attempts=2)
        with pytest.raises(PlatformError) as failed:
            await found(client, "ada@example.com")

    assert failed.value.retriable is True


async def test_every_answer_reports_the_api_usage_the_client_exposes() -> None:
    fake = FakeSalesforce(instance_url=BASE, api_limit=5000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http:
        client = salesforce(fake, http)
        assert client.api_usage is None

        lead_id = await client.create(email="ada@example.com", stage_value="Open - Not Contacted")
        await client.write_stage(record_id=lead_id, stage_value="Working - Contacted", backward=False)
        raw = await http.get(f"{BASE}/services/data/v62.0/limits")  # no session: refused, still reported

    assert client.api_usage == ApiUsage(used=2, limit=5000)
    assert (raw.status_code, raw.json()[0]["errorCode"]) == (401, "INVALID_SESSION_ID")
    assert raw.headers["sforce-limit-info"] == "api-usage=2/5000"


# --- Outbound Messages -----------------------------------------------------------------------------


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3")
    async with open_bus(settings, topics=[]) as opened:
        yield opened


async def published(bus: Bus, topic: str) -> list[SourceEvent]:
    events: list[SourceEvent] = []
    async with bus.subscribe([topic], group=f"reader-{uuid.uuid4().hex}") as subscription:
        async for batch in subscription.batches(max_wait=0.2):
            if not batch:
                break
            events.extend(e for e in map(envelope.decode, batch) if isinstance(e, SourceEvent))
    return events


async def test_outbound_messages_verify_and_normalize_in_ingest_and_name_who_changed_the_lead(
    bus: Bus,
) -> None:
    topics = TopicSettings(topic_source_events=f"events-{uuid.uuid4().hex[:8]}")
    settings = deliveries.settings(salesforce_outbound_token=OUTBOUND_TOKEN)
    ingest = create_app(bus=bus, settings=settings, topics=topics, mapping=load_stage_mapping())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ingest)) as to_ingest:
        fake = FakeSalesforce(
            instance_url=BASE,
            organization_id=deliveries.SALESFORCE_ORG,
            webhook_url=f"{deliveries.BASE_URL}/webhooks/salesforce?token={OUTBOUND_TOKEN}",
            webhook_client=to_ingest,
            read_at_send=False,  # one message per change as it was, so the assertions can name each
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http:
            lead_id = await salesforce(fake, http).create(
                email="ada@example.com", stage_value="Open - Not Contacted"
            )
        fake.user_sets_status(lead_id, "Working - Contacted")
        conversion = fake.user_converts(lead_id)
        fake.user_sets_opportunity_stage(conversion.opportunity_id, "Closed Won")
        await fake.webhooks_idle()

    assert [(d.attempts, d.acknowledged) for d in fake.deliveries] == [(1, True)] * 5
    # A conversion changes the lead and its opportunity at the same instant: lead first, then.
    events = sorted(
        await published(bus, topics.topic_source_events),
        key=lambda e: (e.occurred_at, e.object_type is not ObjectType.LEAD),
    )
    assert [(e.object_type, e.object_id, e.changes.stage, e.change_source) for e in events] == [
        (ObjectType.LEAD, lead_id, Stage.MQL, fake.integration_user_id),
        (ObjectType.LEAD, lead_id, Stage.SAL, fake.human_user_id),
        (ObjectType.LEAD, lead_id, Stage.SQL, fake.human_user_id),
        (ObjectType.OPPORTUNITY, conversion.opportunity_id, Stage.OPPORTUNITY, fake.human_user_id),
        (ObjectType.OPPORTUNITY, conversion.opportunity_id, Stage.CUSTOMER, fake.human_user_id),
    ]
    assert {e.account_id for e in events} == {fake.organization_id}
    assert len({e.idempotency_key for e in events}) == 5
    assert events[0].changes.email == "ada@example.com" and events[-1].changes.status == "won"


def receiver(answers: list[tuple[int, bytes]], bodies: list[bytes]) -> FastAPI:
    """An Outbound Message endpoint that gives the scripted answers in turn, then acks."""
    app = FastAPI()

    @app.post("/om")
    async def om(request: Request) -> Response:
        bodies.append(await request.body())
        status, body = answers.pop(0) if answers else (200, ACKNOWLEDGEMENT.body)
        return Response(body, status_code=status, media_type="text/xml")

    return app


def fake_posting_to(
    app: FastAPI, *, shuffle: bool = False, read_at_send: bool = True
) -> tuple[FakeSalesforce, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    fake = FakeSalesforce(
        webhook_url="https://receiver.test/om",
        webhook_client=http,
        shuffle_webhooks=shuffle,
        read_at_send=read_at_send,
        seed=7,
    )
    return fake, http


async def test_an_outbound_message_is_retried_until_it_is_acknowledged() -> None:
    bodies: list[bytes] = []
    no_ack = b"<ok/>"  # a 200 without the SOAP Ack does not count as delivered
    fake, http = fake_posting_to(receiver([(503, b""), (200, no_ack)], bodies))
    async with http:
        fake.user_creates_lead("ada@example.com")
        await fake.webhooks_idle()

    assert [(d.attempts, d.acknowledged) for d in fake.deliveries] == [(3, True)]
    ids = {parse_outbound_message(body).notifications[0].id for body in bodies}
    assert len(bodies) == 3 and len(ids) == 1  # the same notification each time


async def test_an_outbound_message_never_acknowledged_is_given_up_after_the_attempts() -> None:
    bodies: list[bytes] = []
    fake, http = fake_posting_to(receiver([(500, b"")] * 10, bodies))
    async with http:
        fake.user_creates_lead("ada@example.com")
        await fake.webhooks_idle()

    assert [(d.attempts, d.acknowledged) for d in fake.deliveries] == [(4, False)]


async def test_outbound_messages_read_the_record_when_sent_so_a_short_lived_status_is_never_seen() -> None:
    bodies: list[bytes] = []
    fake, http = fake_posting_to(receiver([], bodies))
    async with http:
        lead_id = fake.user_creates_lead("ada@example.com")
        fake.user_sets_status(lead_id, "Working - Contacted")
        fake.user_sets_status(lead_id, "Closed - Not Converted")
        await fake.webhooks_idle()

    statuses = [parse_outbound_message(body).notifications[0].fields["Status"] for body in bodies]
    assert statuses == ["Closed - Not Converted"] * 3


async def test_shuffled_outbound_messages_all_arrive_once() -> None:
    bodies: list[bytes] = []
    fake, http = fake_posting_to(receiver([], bodies), shuffle=True, read_at_send=False)
    async with http:
        leads = [fake.user_creates_lead(f"p{n}@example.com") for n in range(8)]
        await fake.webhooks_idle()

    received = [parse_outbound_message(body).notifications[0].fields["Id"] for body in bodies]
    assert sorted(received) == sorted(leads)
