"""Each publish to Kafka gives up at its own deadline, one timer serving them all (kafka_batches.py)."""

import asyncio
import time
import uuid

import pytest

from onefunnel.shared.bus import BusUnavailable, OutgoingMessage, open_bus
from onefunnel.shared.settings import BusKind, BusSettings
from tests.conftest import KafkaBroker

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.kafka]
TIMEOUT = 1.0


async def test_publishes_started_at_different_times_each_fail_at_their_own_deadline(
    stoppable_kafka: KafkaBroker,
) -> None:
    topic = f"deadline-{uuid.uuid4().hex[:8]}"
    settings = BusSettings(
        bus=BusKind.KAFKA, kafka_bootstrap_servers=stoppable_kafka.bootstrap_servers, publish_timeout=TIMEOUT
    )

    async def publish(key: str) -> float:
        """Seconds until the publish gave up; it must give up, the broker being down."""
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            await bus.publish(topic, [OutgoingMessage(key=key.encode(), value=b"{}", headers=())])
        return time.monotonic() - started

    async with open_bus(settings, topics=[topic]) as bus:
        await bus.publish(topic, [OutgoingMessage(key=b"first", value=b"{}", headers=())])
        await asyncio.to_thread(stoppable_kafka.stop)

        early = [asyncio.create_task(publish(f"early-{n}")) for n in range(10)]
        await asyncio.sleep(TIMEOUT / 2)
        late = [asyncio.create_task(publish(f"late-{n}")) for n in range(10)]
        try:
            async with asyncio.timeout(TIMEOUT * 10):  # a publish that never gives up fails the test here
                waited = await asyncio.gather(*early, *late)
        finally:  # closing flushes what aiokafka still buffers, and that needs a broker
            await asyncio.to_thread(stoppable_kafka.start)

    # Not before the deadline, and not at the next publish's deadline either.
    assert all(TIMEOUT * 0.9 <= seconds < TIMEOUT * 1.4 for seconds in waited), waited
