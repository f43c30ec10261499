"""The broker client's ceiling: an aiokafka producer publishing ingest's messages, no HTTP around it.

The producer is configured as shared/bus/kafka.py configures it (acks=all, idempotence, linger 1 ms)
and publishes a batch the same way: send every message, then wait for all acknowledgements. The
messages are built once, before timing, by normalizing the benchmark's HubSpot deliveries exactly as
ingest does, so only the client and the broker are measured.
"""

import asyncio
import contextlib
import itertools
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from ingest_deliveries import SECRET, Deliveries
from ingest_load import Samples, summary

from onefunnel.ingest.platforms.base import Delivery
from onefunnel.ingest.platforms.hubspot import HubSpot
from onefunnel.ingest.webhooks import CE_SOURCE
from onefunnel.shared import envelope
from onefunnel.shared.bus import OutgoingMessage
from onefunnel.shared.stage_mapping import load_stage_mapping

PUBLISH_TIMEOUT = 3.0


def ingest_messages(count: int, *, first_event_id: int) -> list[OutgoingMessage]:
    """`count` messages with the bytes ingest would publish for the benchmark's deliveries."""
    deliveries = Deliveries(
        batch=count, public_base_url="http://bench", host="bench", first_event_id=first_event_id
    )
    body, _ = deliveries.body()
    delivery = Delivery(method="POST", url="", headers={}, query={}, body=body, received_at=datetime.now(UTC))
    normalized = HubSpot(client_secrets=[SECRET]).normalize(delivery, load_stage_mapping())
    return [envelope.encode(event, source=CE_SOURCE) for event in normalized.events]


async def run(
    *,
    bootstrap: str,
    topic: str,
    partitions: int,
    batch: int,
    concurrency: int,
    warmup: float,
    seconds: float,
    first_event_id: int,
) -> dict[str, float]:
    """Publish batches from `concurrency` tasks in a closed loop; time each batch's acknowledgement."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="onefunnel-bench")
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    pool = itertools.cycle(ingest_messages(10_000, first_event_id=first_event_id))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="onefunnel-bench",
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(PUBLISH_TIMEOUT * 1000),
        linger_ms=1,
    )
    await producer.start()
    samples = Samples(seconds=seconds)
    begin = time.perf_counter() + warmup
    end = begin + seconds

    async def publish(messages: list[OutgoingMessage]) -> None:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            sent = [
                await producer.send(topic, key=m.key, value=m.value, headers=list(m.headers))
                for m in messages
            ]
            await asyncio.gather(*sent)

    async def worker() -> None:
        while (started := time.perf_counter()) < end:
            await publish([next(pool) for _ in range(batch)])
            done = time.perf_counter()
            samples.acknowledged += 1
            if begin <= done < end:
                samples.statuses[200] += 1
                samples.latencies.append(done - started)

    cpu_before = time.process_time()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await producer.stop()
    cpu_us = (time.process_time() - cpu_before) / samples.acknowledged * 1e6
    return {**summary(samples, batch=batch), "cpu_us": cpu_us}
