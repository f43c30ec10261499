"""The HubSpot client against the HubSpot fake, and the fake's webhooks through the real ingest adapter."""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from onefunnel.ingest.app import create_app
from onefunnel.ingest.platforms.base import Delivery, Unauthorized
from onefunnel.ingest.platforms.hubspot import HubSpot
from onefunnel.shared import envelope
from onefunnel.shared.bus import open_bus
from onefunnel.shared.events import SourceEvent, SourceEventType
from onefunnel.shared.settings import BusKind, BusSettings, TopicSettings
from onefunnel.shared.stage_mapping import load_stage_mapping
from onefunnel.shared.stages import Stage
from onefunnel.simulators.hubspot import LIFECYCLE_STAGES, HubSpotFake
from onefunnel.simulators.hubspot_api import ApiCall
from onefunnel.sync.platforms.base import PlatformError, RateLimited, StageWrite
from onefunnel.sync.platforms.hubspot import HubSpotClient
from onefunnel.sync.platforms.throttle import Throttle
from tests.ingest import deliveries

pytestmark = pytest.mark.asyncio(loop_scope="session")
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
WEBHOOK_URL = f"{deliveries.BASE_URL}/webhooks/hubspot"
MAPPING = load_stage_mapping()


@dataclass
class Receiver:
    """The ingest HubSpot adapter behind a MockTransport: every webhook the fake sends is verified here."""

    adapter: HubSpot = field(default_factory=lambda: HubSpot(client_secrets=[deliveries.HUBSPOT_SECRET]))
    events: list[SourceEvent] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    fail_next: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fail_next:
            self.fail_next -= 1
            return httpx.Response(500)
        delivery = Delivery(
            method=request.method,
            url=str(request.url),
            headers={name.lower(): value for name, value in request.headers.items()},
            query=dict(request.url.params),
            body=request.content,
            received_at=datetime.now(UTC),
        )
        try:
            self.adapter.verify(delivery)
        except Unauthorized:
            self.rejected += 1
            return httpx.Response(401)
        self.events.extend(self.adapter.normalize(delivery, MAPPING).events)
        self.raw.extend(json.loads(request.content))
        return httpx.Response(200)

    def clear(self) -> None:
        self.events.clear()
        self.raw.clear()


@dataclass
class World:
    fake: HubSpotFake
    api: httpx.AsyncClient
    receiver: Receiver

    def client(self, *, token: str = TOKEN, **options: Any) -> HubSpotClient:
        config: dict[str, Any] = {"attempts": 5, "initial_wait": 0.001, "max_wait": 0.05, "timeout": 2.0}
        return HubSpotClient(
            http=self.api,
            access_token=token,
            throttle=Throttle(per_second=1000, burst=100, concurrency=10),
            **{**config, **options},
        )

    async def settle(self) -> None:
        """Wait for the webhooks so far, then forget them and the API calls: the test's own start."""
        await self.fake.webhooks_idle()
        self.receiver.clear()
        self.fake.calls.clear()


async def world_of(**fake_options: Any) -> AsyncIterator[World]:
    receiver = Receiver()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver.handle)) as hooks:
        fake = HubSpotFake(
            access_tokens=[TOKEN],
            webhook_url=WEBHOOK_URL,
            client_secret=deliveries.HUBSPOT_SECRET,
            webhook_client=hooks,
            **fake_options,
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as api:
            yield World(fake=fake, api=api, receiver=receiver)
            await fake.webhooks_idle()
    assert receiver.rejected == 0, "the ingest adapter refused a webhook the fake signed"


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async for each in world_of():
        yield each


def statuses(world: World) -> list[tuple[str, int]]:
    return [(call.method, call.status) for call in world.fake.calls]


async def found(client: HubSpotClient, email: str) -> str | None:
    """The record of one email, as sync's lookup of many tells it."""
    return (await client.find_by_emails([email])).get(email.casefold())


async def test_a_created_contact_is_found_by_its_email_in_any_case(world: World) -> None:
    client = world.client()

    contact_id = await client.create(email="ada@example.com", stage_value="lead")

    assert await found(client, "ADA@example.com") == contact_id
    assert await found(client, "nobody@example.com") is None
    assert world.fake.snapshot() == {contact_id: {"email": "ada@example.com", "lifecyclestage": "lead"}}


async def test_creating_an_email_hubspot_already_has_returns_the_existing_contact(world: World) -> None:
    existing = world.fake.user_creates_contact("grace@example.com", "subscriber")  # after our lookup, say
    await world.settle()

    assert await world.client().create(email="grace@example.com", stage_value="lead") == existing

    assert statuses(world) == [("POST", 409)]
    assert world.fake.snapshot()[existing]["lifecyclestage"] == "subscriber"


async def test_many_emails_are_looked_up_in_one_batch_read(world: World) -> None:
    ada = world.fake.user_creates_contact("Ada@Example.com", "lead")
    grace = world.fake.user_creates_contact("grace@example.com", "lead")
    await world.settle()

    found = await world.client().find_by_emails(["ada@example.com", "GRACE@example.com", "x@y.z"])

    assert found == {"ada@example.com": ada, "grace@example.com": grace}
    assert world.fake.calls == [ApiCall("POST", "/crm/v3/objects/contacts/batch/read", 207)]


async def test_a_forward_stage_write_is_one_patch_and_one_integration_webhook(world: World) -> None:
    client = world.client()
    contact_id = await client.create(email="alan@example.com", stage_value="lead")
    await world.settle()

    await client.write_stage(record_id=contact_id, stage_value="marketingqualifiedlead", backward=False)
    await world.fake.webhooks_idle()

    assert statuses(world) == [("PATCH", 200)]
    [event] = world.receiver.events
    assert (event.object_id, event.event_type, event.changes.stage) == (
        contact_id,
        SourceEventType.CHANGED,
        Stage.MQL,
    )
    assert event.change_source == "INTEGRATION"


async def test_hubspot_ignores_an_earlier_stage_and_the_client_reports_it(world: World) -> None:
    client = world.client()
    contact_id = await client.create(email="edsger@example.com", stage_value="customer")
    await world.settle()

    with pytest.raises(PlatformError) as raised:
        await client.write_stage(record_id=contact_id, stage_value="lead", backward=False)
    await world.fake.webhooks_idle()

    assert (raised.value.code, raised.value.retriable) == ("LIFECYCLESTAGE_NOT_MOVED", False)
    assert statuses(world) == [("PATCH", 200)]
    assert world.fake.snapshot()[contact_id]["lifecyclestage"] == "customer"
    assert world.receiver.events == []


async def test_a_backward_move_clears_then_sets_in_two_writes_and_comes_back_as_two_webhooks(
    world: World,
) -> None:
    client = world.client()
    contact_id = await client.create(email="barbara@example.com", stage_value="customer")
    await world.settle()

    await client.write_stage(record_id=contact_id, stage_value="lead", backward=True)
    await world.fake.webhooks_idle()

    assert statuses(world) == [("PATCH", 200), ("PATCH", 200)]
    ordered = sorted(world.receiver.events, key=lambda event: event.occurred_at)
    assert [(e.changes.stage_raw, e.changes.stage) for e in ordered] == [("", None), ("lead", Stage.LEAD)]
    assert world.fake.snapshot()[contact_id]["lifecyclestage"] == "lead"


async def test_forward_writes_to_many_contacts_are_one_batch_call_and_one_webhook_each(world: World) -> None:
    client = world.client()
    contacts = [await client.create(email=f"grace{n}@example.com", stage_value="lead") for n in range(3)]
    await world.settle()

    outcomes = await client.write_stages([StageWrite(c, "salesqualifiedlead") for c in contacts])
    await world.fake.webhooks_idle()

    assert outcomes == [None, None, None]
    assert world.fake.calls == [ApiCall("POST", "/crm/v3/objects/contacts/batch/update", 200)]
    assert sorted(e.object_id for e in world.receiver.events) == sorted(contacts)
    assert {(e.changes.stage, e.change_source) for e in world.receiver.events} == {(Stage.SQL, "INTEGRATION")}


async def test_a_batch_with_a_missing_contact_and_an_earlier_stage_reports_each_and_applies_the_rest(
    world: World,
) -> None:
    client = world.client()
    moved = await client.create(email="ada@example.com", stage_value="lead")
    kept = await client.create(email="hedy@example.com", stage_value="customer")
    await world.settle()

    outcomes = await client.write_stages(
        [StageWrite(moved, "opportunity"), StageWrite("999999", "opportunity"), StageWrite(kept, "lead")]
    )

    assert statuses(world) == [("POST", 207)]
    assert outcomes[0] is None
    assert outcomes[1] is not None and (outcomes[1].code, outcomes[1].retriable) == (
        "OBJECT_NOT_FOUND",
        False,
    )
    assert outcomes[2] is not None and outcomes[2].code == "LIFECYCLESTAGE_NOT_MOVED"
    assert world.fake.snapshot()[moved]["lifecyclestage"] == "opportunity"
    assert world.fake.snapshot()[kept]["lifecyclestage"] == "customer"


async def test_batches_hold_at_most_100_contacts_each_named_once(world: World) -> None:
    client = world.client()
    contacts = [await client.create(email=f"alan{n}@example.com", stage_value="lead") for n in range(101)]
    await world.settle()
    twice = StageWrite(contacts[0], "opportunity")  # a second write to the same contact: a later call

    outcomes = await client.write_stages([*(StageWrite(c, "salesqualifiedlead") for c in contacts), twice])

    assert outcomes == [None] * 102
    assert statuses(world) == [("POST", 200), ("POST", 200)]
    assert world.fake.snapshot()[contacts[0]]["lifecyclestage"] == "opportunity"


async def test_the_fake_refuses_a_batch_hubspot_would_refuse(world: World) -> None:
    url = "https://api.hubapi.com/crm/v3/objects/contacts/batch/update"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    inputs = [{"id": str(n), "properties": {"lifecyclestage": "lead"}} for n in range(101)]

    too_many = await world.api.post(url, json={"inputs": inputs}, headers=headers)
    twice = await world.api.post(url, json={"inputs": [inputs[0], inputs[0]]}, headers=headers)
    invalid = await world.api.post(
        url, json={"inputs": [{"id": "1", "properties": {"lifecyclestage": "nope"}}]}, headers=headers
    )

    assert [r.status_code for r in (too_many, twice, invalid)] == [400, 400, 400]
    assert {r.json()["category"] for r in (too_many, twice, invalid)} == {"VALIDATION_ERROR"}


async def test_a_rate_limited_batch_is_retried_until_it_lands(world: World) -> None:
    client = world.client()
    contact_id = await client.create(email="mary@example.com", stage_value="lead")
    await world.settle()
    world.fake.inject_rate_limit(count=2, retry_after=0.01)

    assert await client.write_stages([StageWrite(contact_id, "customer")]) == [None]
    assert statuses(world) == [("POST", 429)] * 2 + [("POST", 200)]


async def test_a_rate_limit_storm_is_retried_until_the_write_lands(world: World) -> None:
    client = world.client()
    contact_id = await client.create(email="katherine@example.com", stage_value="lead")
    await world.settle()
    world.fake.inject_rate_limit(count=3, retry_after=0.01)

    await client.write_stage(record_id=contact_id, stage_value="opportunity", backward=False)

    assert statuses(world) == [("PATCH", 429)] * 3 + [("PATCH", 200)]
    assert world.fake.snapshot()[contact_id]["lifecyclestage"] == "opportunity"


async def test_the_rolling_window_answers_429_with_hubspots_body_and_the_client_waits_it_out() -> None:
    async for world in world_of(rate_limit_max=2, rate_limit_window=0.2):
        path = "/crm/v3/properties/contacts/lifecyclestage"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        first = await world.api.get(f"http://hubspot{path}", headers=headers)
        await world.api.get(f"http://hubspot{path}", headers=headers)
        refused = await world.api.get(f"http://hubspot{path}", headers=headers)

        assert first.headers["X-HubSpot-RateLimit-Max"] == "2"
        assert first.headers["X-HubSpot-RateLimit-Remaining"] == "1"
        assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "200"
        assert refused.status_code == 429
        assert set(refused.json()) == {"status", "message", "errorType", "correlationId", "policyName"}
        assert (refused.json()["errorType"], refused.json()["policyName"]) == (
            "RATE_LIMIT",
            "TEN_SECONDLY_ROLLING",
        )
        assert 0 < float(refused.headers["Retry-After"]) <= 0.2

        client = world.client(max_wait=1.0)
        contact_id = await client.create(email="hedy@example.com", stage_value="lead")
        for stage in ("marketingqualifiedlead", "salesqualifiedlead", "opportunity"):
            await client.write_stage(record_id=contact_id, stage_value=stage, backward=False)
        assert world.fake.snapshot()[contact_id]["lifecyclestage"] == "opportunity"
        assert ("PATCH", 429) in statuses(world) or ("POST", 429) in statuses(world)


async def test_transient_server_errors_are_retried(world: World) -> None:
    client = world.client()
    contact_id = await client.create(email="margaret@example.com", stage_value="lead")
    await world.settle()
    world.fake.inject_errors(502, count=2)

    assert await found(client, "margaret@example.com") == contact_id
    assert statuses(world) == [("POST", 502), ("POST", 502), ("POST", 200)]


async def test_server_errors_that_outlast_the_attempts_surface_as_retriable(world: World) -> None:
    world.fake.inject_errors(503, count=10)

    with pytest.raises(PlatformError) as raised:
        await found(world.client(attempts=3), "someone@example.com")

    assert (raised.value.retriable, raised.value.status) == (True, 503)
    assert len(world.fake.calls) == 3


async def test_a_storm_longer_than_the_attempts_surfaces_as_rate_limited(world: World) -> None:
    world.fake.inject_rate_limit(count=10, retry_after=0)

    with pytest.raises(RateLimited) as raised:
        await found(world.client(attempts=2), "someone@example.com")

    assert (raised.value.code, raised.value.retry_after) == ("TEN_SECONDLY_ROLLING", 0.0)


async def test_an_unknown_stage_value_is_a_permanent_validation_error_sent_once(world: World) -> None:
    client = world.client()
    contact_id = await client.create(email="frances@example.com", stage_value="lead")
    await world.settle()

    with pytest.raises(PlatformError) as raised:
        await client.write_stage(record_id=contact_id, stage_value="not-a-stage", backward=False)

    assert (raised.value.status, raised.value.code, raised.value.retriable) == (
        400,
        "VALIDATION_ERROR",
        False,
    )
    assert "frances" not in str(raised.value)
    assert statuses(world) == [("PATCH", 400)]


async def test_writing_to_a_missing_contact_is_a_permanent_not_found_error(world: World) -> None:
    with pytest.raises(PlatformError) as raised:
        await world.client().write_stage(record_id="999999", stage_value="lead", backward=False)

    assert (raised.value.status, raised.value.retriable) == (404, False)
    assert statuses(world) == [("PATCH", 404)]


async def test_a_wrong_token_gets_hubspots_401_and_the_client_is_not_ready(world: World) -> None:
    wrong = world.client(token="pat-na1-revoked")

    assert await world.client().ready() is True
    assert await wrong.ready() is False
    with pytest.raises(PlatformError) as raised:
        await found(wrong, "someone@example.com")
    answer = await world.api.get("http://hubspot/crm/v3/properties/contacts/lifecyclestage")

    assert (raised.value.status, raised.value.code, raised.value.retriable) == (
        401,
        "INVALID_AUTHENTICATION",
        False,
    )
    assert set(answer.json()) == {"status", "message", "correlationId", "category"}
    assert statuses(world)[-2:] == [("POST", 401), ("GET", 401)]


async def test_the_lifecyclestage_definition_lists_the_default_options_in_order(world: World) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = await world.api.get("http://hubspot/crm/v3/properties/contacts/lifecyclestage", headers=headers)

    definition = answer.json()
    assert (definition["name"], definition["type"], definition["fieldType"]) == (
        "lifecyclestage",
        "enumeration",
        "radio",
    )
    assert [option["value"] for option in definition["options"]] == list(LIFECYCLE_STAGES)


async def test_a_slow_hubspot_times_out_as_a_retriable_error(world: World) -> None:
    world.fake.latency = 0.2

    with pytest.raises(PlatformError) as raised:
        await found(world.client(timeout=0.05, attempts=2), "someone@example.com")

    assert raised.value.retriable is True
    assert "timed out" in str(raised.value)


async def test_user_actions_send_crm_ui_webhooks_that_ingest_verifies_and_normalizes(world: World) -> None:
    fake = world.fake
    ada = fake.user_creates_contact("ada@example.com", "lead")
    fake.user_sets_lifecyclestage(ada, "salesqualifiedlead")
    fake.user_sets_lifecyclestage(ada, "subscriber")  # backward: a clear and a set
    grace = fake.user_creates_contact("grace@example.com", "customer")
    fake.user_merges(ada, grace)
    await fake.webhooks_idle()

    events = sorted(world.receiver.events, key=lambda event: event.occurred_at)
    assert {event.change_source for event in events} == {"CRM_UI"}
    assert [(e.object_id, e.event_type, e.changes.stage_raw) for e in events] == [
        (ada, SourceEventType.CREATED, None),
        (ada, SourceEventType.CHANGED, None),  # email
        (ada, SourceEventType.CHANGED, "lead"),
        (ada, SourceEventType.CHANGED, "salesqualifiedlead"),
        (ada, SourceEventType.CHANGED, ""),
        (ada, SourceEventType.CHANGED, "subscriber"),
        (grace, SourceEventType.CREATED, None),
        (grace, SourceEventType.CHANGED, None),
        (grace, SourceEventType.CHANGED, "customer"),
        (ada, SourceEventType.MERGED, None),
        (ada, SourceEventType.CHANGED, "customer"),  # a merge keeps the stage furthest down the funnel
    ]
    assert events[1].changes.email == "ada@example.com"
    assert events[-2].merged_object_ids == [grace]
    assert len({(e["portalId"], e["subscriptionId"], e["eventId"]) for e in world.receiver.raw}) == len(
        events
    )
    assert fake.snapshot() == {
        ada: {"email": "ada@example.com", "lifecyclestage": "customer", "hs_merged_object_ids": grace}
    }


async def test_shuffled_deliveries_can_reverse_a_recycle_and_occurred_at_restores_the_order() -> None:
    async for world in world_of(shuffle_webhooks=True, seed=3):
        contact_id = world.fake.user_creates_contact("alan@example.com", "customer")
        await world.settle()

        world.fake.user_sets_lifecyclestage(contact_id, "lead")
        await world.fake.webhooks_idle()

        arrived = [event["propertyValue"] for event in world.receiver.raw]
        in_time = [e["propertyValue"] for e in sorted(world.receiver.raw, key=lambda e: e["occurredAt"])]
        assert arrived == ["lead", ""]
        assert in_time == ["", "lead"]


async def test_a_refused_webhook_is_redelivered_with_the_next_attempt_number(world: World) -> None:
    world.receiver.fail_next = 1

    world.fake.user_creates_contact("ada@example.com")
    await world.fake.webhooks_idle()

    assert world.fake.webhooks is not None
    attempts = [(d.status, d.events[0]["attemptNumber"]) for d in world.fake.webhooks.deliveries]
    assert attempts == [(500, 0), (200, 1)]
    assert [event.event_type for event in world.receiver.events] == [
        SourceEventType.CREATED,
        SourceEventType.CHANGED,
    ]


async def test_the_fakes_webhooks_are_published_by_the_ingest_app(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(topic_source_events=f"events-{suffix}", topic_dead_letters=f"dead-{suffix}")
    settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3")
    async with open_bus(settings, topics=topics.all) as bus:
        ingest = create_app(bus=bus, settings=deliveries.settings(), topics=topics, mapping=MAPPING)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ingest)) as hooks:
            fake = HubSpotFake(
                access_tokens=[TOKEN],
                webhook_url=WEBHOOK_URL,
                client_secret=deliveries.HUBSPOT_SECRET,
                webhook_client=hooks,
            )
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as api:
                client = HubSpotClient(
                    http=api, access_token=TOKEN, throttle=Throttle(per_second=100, burst=10, concurrency=4)
                )
                contact_id = await client.create(email="ada@example.com", stage_value="lead")
                await client.write_stage(record_id=contact_id, stage_value="subscriber", backward=True)
                await fake.webhooks_idle()

        assert fake.webhooks is not None
        assert [delivery.status for delivery in fake.webhooks.deliveries] == [200, 200, 200]
        published: list[SourceEvent] = []
        async with bus.subscribe([topics.topic_source_events], group=f"reader-{suffix}") as subscription:
            async for batch in subscription.batches(max_wait=0.2):
                if not batch:
                    break
                published += [e for e in map(envelope.decode, batch) if isinstance(e, SourceEvent)]
    published.sort(key=lambda event: event.occurred_at)  # deliveries may overtake one another
    assert [(e.event_type, e.changes.stage_raw) for e in published] == [
        (SourceEventType.CREATED, None),
        (SourceEventType.CHANGED, None),
        (SourceEventType.CHANGED, "lead"),
        (SourceEventType.CHANGED, ""),
        (SourceEventType.CHANGED, "subscriber"),
    ]
    assert {e.object_id for e in published} == {contact_id}
