"""Durability against a real broker: a 2xx means the events are in Kafka, through a broker outage."""

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from onefunnel.ingest.app import create_app
from onefunnel.shared import envelope
from onefunnel.shared.bus import open_bus
from onefunnel.shared.events import SourceEvent
from onefunnel.shared.settings import BusKind, BusSettings, TopicSettings
from onefunnel.shared.stage_mapping import load_stage_mapping
from tests.conftest import KafkaBroker, own_kafka_broker
from tests.ingest import deliveries

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.kafka]
HUBSPOT_TIMEOUT_SECONDS = 5.0


@pytest.fixture
def broker() -> Iterator[KafkaBroker]:
    """A broker of this test's own, since the test stops and restarts it."""
    with own_kafka_broker() as started:
        yield started


async def test_every_acknowledged_delivery_survives_a_broker_outage_and_none_hangs(
    broker: KafkaBroker,
) -> None:
    topics = TopicSettings(topic_source_events=f"events-{uuid.uuid4().hex[:8]}")
    settings = BusSettings(
        bus=BusKind.KAFKA, kafka_bootstrap_servers=broker.bootstrap_servers, publish_timeout=2.0
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
            await asyncio.to_thread(broker.stop)
            assert [await deliver(n) for n in range(5, 8)] == [503] * 3
            await asyncio.to_thread(broker.start)
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
