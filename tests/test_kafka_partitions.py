"""KafkaBus picks partitions itself: the same ones as aiokafka's default partitioner, nothing left behind."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from onefunnel.shared.bus import Bus, Message, OutgoingMessage, open_bus
from onefunnel.shared.settings import BusKind, BusSettings
from tests.conftest import KafkaBroker

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.kafka]

PARTITIONS = 6


@pytest.fixture
def topics() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"partitions-{suffix}", f"partitions-plain-{suffix}"


@pytest.fixture
async def bus(kafka: KafkaBroker, topics: tuple[str, str]) -> AsyncIterator[Bus]:
    settings = BusSettings(
        bus=BusKind.KAFKA,
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_partitions=PARTITIONS,
        publish_timeout=10.0,
    )
    async with open_bus(settings, topics=topics) as opened:
        yield opened


async def read_all(kafka: KafkaBroker, topic: str, *, count: int) -> list[Message]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    received: list[Message] = []
    try:
        async with asyncio.timeout(30):
            while len(received) < count:
                fetched = await consumer.getmany(timeout_ms=500)
                received += [
                    Message(r.topic, r.partition, r.offset, r.key or b"", r.value or b"", tuple(r.headers))
                    for records in fetched.values()
                    for r in records
                ]
    finally:
        await consumer.stop()
    return received


async def test_each_key_lands_on_the_partition_aiokafkas_default_partitioner_picks(
    bus: Bus, kafka: KafkaBroker, topics: tuple[str, str]
) -> None:
    ours, plain = topics
    keys = [f"hubspot:contact:{n}".encode() for n in range(120)]
    await bus.publish(ours, [OutgoingMessage(key=key, value=b"v") for key in keys])
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        sent = [await producer.send(plain, key=key, value=b"v") for key in keys]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    by_bus = {m.key: m.partition for m in await read_all(kafka, ours, count=len(keys))}
    by_send = {m.key: m.partition for m in await read_all(kafka, plain, count=len(keys))}

    assert by_bus == by_send
    assert len(set(by_bus.values())) == PARTITIONS


async def test_every_message_of_a_publish_is_on_the_broker_when_it_returns(
    bus: Bus, kafka: KafkaBroker, topics: tuple[str, str]
) -> None:
    topic = topics[0]
    await bus.publish(topic, [OutgoingMessage(key=f"lead-{n}".encode(), value=b"v") for n in range(300)])

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        end_offsets = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    assert sum(end_offsets.values()) == 300
    assert all(end_offsets.values())


async def test_a_publish_larger_than_a_batch_arrives_whole_and_in_order(
    bus: Bus, kafka: KafkaBroker, topics: tuple[str, str]
) -> None:
    topic = topics[0]
    # 2 keys x 60 messages of 1 KB: each key's messages fill several 16 KB batches.
    published = [
        OutgoingMessage(key=key, value=f"{i:04d}".encode() + b"x" * 1020, headers=(("n", str(i).encode()),))
        for i in range(60)
        for key in (b"lead-a", b"lead-b")
    ]
    await bus.publish(topic, published)

    received = await read_all(kafka, topic, count=len(published))

    for key in (b"lead-a", b"lead-b"):
        mine = [m for m in received if m.key == key]
        assert [m.value for m in mine] == [m.value for m in published if m.key == key]
        assert [m.header("n") for m in mine] == [str(i).encode() for i in range(60)]
        assert len({(m.partition) for m in mine}) == 1


async def test_concurrent_publishes_arrive_once_each_and_keep_each_callers_order(
    bus: Bus, kafka: KafkaBroker, topics: tuple[str, str]
) -> None:
    """Concurrent publishes share record batches (kafka_batches.py); none may lose, repeat or reorder."""
    topic = topics[0]
    callers, rounds, keys = 16, 3, 8

    async def caller(c: int) -> None:
        for r in range(rounds):  # one caller's publishes, one after the other
            await bus.publish(
                topic,
                [
                    OutgoingMessage(key=f"lead-{k}".encode(), value=f"{c}:{r}:{k}".encode())
                    for k in range(keys)
                ]
                + ([OutgoingMessage(key=b"lead-big", value=b"x" * 200_000)] if c == r == 0 else []),
            )

    await asyncio.gather(*(caller(c) for c in range(callers)))

    received = await read_all(kafka, topic, count=callers * rounds * keys + 1)
    small = [m for m in received if m.key != b"lead-big"]
    assert sorted(m.value for m in small) == sorted(
        f"{c}:{r}:{k}".encode() for c in range(callers) for r in range(rounds) for k in range(keys)
    )
    assert [len(m.value) for m in received if m.key == b"lead-big"] == [200_000]
    for c in range(callers):
        for k in range(keys):
            mine = [
                m.value
                for m in small
                if m.value.startswith(f"{c}:".encode()) and m.key == f"lead-{k}".encode()
            ]
            assert mine == [f"{c}:{r}:{k}".encode() for r in range(rounds)]
