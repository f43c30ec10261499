"""Durability against a real broker: a 2xx means the events are in Kafka, through a broker outage."""

import asyncio
import time
import uuid

import httpx
import pytest

from onefunnel.ingest.app import create_app
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, Message, OutgoingMessage, open_bus
from onefunnel.shared.events import SourceEvent
from onefunnel.shared.settings import BusKind, BusSettings, TopicSettings
from onefunnel.shared.stage_mapping import load_stage_mapping
from tests.conftest import KafkaBroker
from tests.ingest import deliveries

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.kafka]
HUBSPOT_TIMEOUT_SECONDS = 5.0


async def test_every_acknowledged_delivery_survives_a_broker_outage_and_none_hangs(
    stoppable_kafka: KafkaBroker,
) -> None:
    topics = TopicSettings(topic_source_events=f"events-{uuid.uuid4().hex[:8]}")
    settings = BusSettings(
        bus=BusKind.KAFKA, kafka_bootstrap_servers=stoppable_kafka.bootstrap_servers, publish_timeout=2.0
    )
    acknowledged: set[str] = set()  # idempotency keys of events in deliveries that got a 2xx
    statuses: list[int] = []

    async with open_bus(settings, topics=topics.all) as bus:
        app = create_app(bus=bus, settings=deliveries.settings(), topics=topics, mapping=load_stage_mapping())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=deliveries.BASE_URL
        ) as client:

            async def deliver(contact_id: int) -> int:
                change = deliveries.hubspot_stage_change(contact_id, "marketingqualifiedlead")
                path, headers, body = deliveries.hubspot(deliveries.hubspot_events(change))
                started = time.monotonic()
                response = await client.post(path, headers=headers, content=body)
                assert time.monotonic() - started < HUBSPOT_TIMEOUT_SECONDS, "answered after HubSpot gave up"
                if response.status_code == 200:
                    acknowledged.add(f"33:25:{change['eventId']}")
                else:
                    assert response.status_code == 503 and response.headers["retry-after"]
                statuses.append(response.status_code)
                return response.status_code

            assert [await deliver(n) for n in range(5)] == [200] * 5
            await asyncio.to_thread(stoppable_kafka.stop)
            assert [await deliver(n) for n in range(5, 8)] == [503] * 3
            await asyncio.to_thread(stoppable_kafka.start)
            async with asyncio.timeout(90):
                while await deliver(100) != 200:  # noqa: ASYNC110 (the producer reconnects by itself)
                    await asyncio.sleep(1)
            assert [await deliver(n) for n in range(8, 13)] == [200] * 5

        stored: set[str] = set()
        async with (
            asyncio.timeout(60),
            bus.subscribe([topics.topic_source_events], group="audit") as subscription,
        ):
            async for batch in subscription.batches(max_wait=1.0):
                for message in batch:
                    event = envelope.decode(message)
                    assert isinstance(event, SourceEvent)
                    stored.add(event.idempotency_key)
                if acknowledged <= stored:
                    break

    assert acknowledged <= stored, f"acknowledged but lost: {acknowledged - stored}"
    assert statuses.count(200) >= 11


async def _read(bus: Bus, topic: str, *, count: int) -> list[Message]:
    received: list[Message] = []
    async with (
        asyncio.timeout(30),
        bus.subscribe([topic], group=f"audit-{uuid.uuid4().hex[:8]}") as subscription,
    ):
        async for batch in subscription.batches(max_wait=0.5):
            received += batch
            if len(received) >= count:
                return received
    raise AssertionError("unreachable")


async def test_a_delivery_as_large_as_the_body_limit_is_stored(kafka: KafkaBroker) -> None:
    """The topics take any body the ingest accepts (ONEFUNNEL_KAFKA_MAX_MESSAGE_BYTES > max body)."""
    topics = TopicSettings(topic_source_events=f"events-{uuid.uuid4().hex[:8]}")
    ingest = deliveries.settings()
    change = deliveries.hubspot_stage_change(7, "lead")
    change |= {"propertyName": "email", "propertyValue": ""}
    padding = ingest.max_body_bytes - len(deliveries.hubspot_events(change)) - 16
    change["propertyValue"] = "a" * padding + "@example.com"
    path, headers, body = deliveries.hubspot(deliveries.hubspot_events(change))
    assert ingest.max_body_bytes - 100 < len(body) <= ingest.max_body_bytes

    async with open_bus(
        BusSettings(bus=BusKind.KAFKA, kafka_bootstrap_servers=kafka.bootstrap_servers), topics=topics.all
    ) as bus:
        app = create_app(bus=bus, settings=ingest, topics=topics, mapping=load_stage_mapping())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=deliveries.BASE_URL
        ) as client:
            response = await client.post(path, headers=headers, content=body)
        assert response.status_code == 200, response.text
        (message,) = await _read(bus, topics.topic_source_events, count=1)

    event = envelope.decode(message)
    assert isinstance(event, SourceEvent) and event.changes.email == change["propertyValue"]


async def test_an_event_larger_than_the_bus_takes_is_refused_with_413_and_dead_lettered(
    kafka: KafkaBroker,
) -> None:
    """Salesforce XML may grow as JSON (a quote becomes two bytes): such an event cannot be stored."""
    topics = TopicSettings(
        topic_source_events=f"events-{uuid.uuid4().hex[:8]}",
        topic_dead_letters=f"dead-{uuid.uuid4().hex[:8]}",
    )
    bus_settings = BusSettings(
        bus=BusKind.KAFKA, kafka_bootstrap_servers=kafka.bootstrap_servers, kafka_max_message_bytes=65_536
    )
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>{deliveries.SALESFORCE_ORG}</OrganizationId><ActionId>04k000000000001AAA</ActionId>
<Notification><Id>04l000000000001AAA</Id>
<sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
<sf:Id>00Q000000000001AAA</sf:Id><sf:LeadSource>{'"' * 32_000}</sf:LeadSource>
</sObject></Notification></notifications></soapenv:Body></soapenv:Envelope>""".encode()

    async with open_bus(bus_settings, topics=topics.all) as bus:
        app = create_app(bus=bus, settings=deliveries.settings(), topics=topics, mapping=load_stage_mapping())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=deliveries.BASE_URL
        ) as client:
            path, headers, _ = deliveries.salesforce_outbound(body)
            response = await client.post(path, headers=headers, content=body)
        assert response.status_code == 413 and response.json()["error"] == "event_too_large"
        (kept,) = await _read(bus, topics.topic_dead_letters, count=1)
        assert kept.value == body and kept.header("onefunnel_source") == b"salesforce"
        await bus.publish(topics.topic_source_events, [OutgoingMessage(key=b"marker", value=b"end")])
        assert [m.key for m in await _read(bus, topics.topic_source_events, count=1)] == [b"marker"]
