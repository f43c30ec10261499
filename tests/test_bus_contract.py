"""One contract, two backends: the embedded SQLite log and a real Apache Kafka broker."""

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from onefunnel.shared.bus import Bus, BusError, BusUnavailable, Message, OutgoingMessage, open_bus
from onefunnel.shared.bus.kafka import KafkaBus
from onefunnel.shared.settings import BusKind, BusSettings
from tests.conftest import KafkaBroker, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def topic() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["local", "kafka"])
async def bus(request: pytest.FixtureRequest, topic: str, tmp_path: Path) -> AsyncIterator[Bus]:
    if request.param == "kafka":
        broker: KafkaBroker = request.getfixturevalue("kafka")
        settings = BusSettings(
            bus=BusKind.KAFKA,
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_partitions=3,
            publish_timeout=10.0,
        )
    else:
        settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3")
    async with open_bus(settings, topics=[topic]) as opened:
        yield opened


def messages(keys: Sequence[str], count: int) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            key=key.encode(), value=f"{key}:{i}".encode(), headers=(("ce_id", f"{key}-{i}".encode()),)
        )
        for i in range(count)
        for key in keys
    ]


async def consume(bus: Bus, topic: str, group: str, *, until: int, commit: bool = True) -> list[Message]:
    """Read until `until` messages arrived (bounded: fails after 30 s), committing each batch."""
    received: list[Message] = []
    async with asyncio.timeout(30), bus.subscribe([topic], group=group) as subscription:
        async for batch in subscription.batches(max_records=50, max_wait=0.5):
            received.extend(batch)
            if commit:
                await subscription.commit(batch)
            if len(received) >= until:
                return received
    return received


async def test_messages_of_one_key_arrive_in_the_order_they_were_published(bus: Bus, topic: str) -> None:
    keys = [f"lead-{n}" for n in range(5)]
    await bus.publish(topic, messages(keys, 20))

    received = await consume(bus, topic, f"g-{uuid.uuid4().hex}", until=100)

    assert len(received) == 100
    for key in keys:
        values = [m.value.decode() for m in received if m.key == key.encode()]
        assert values == [f"{key}:{i}" for i in range(20)]
    assert received[0].header("ce_id") is not None


async def test_committed_messages_are_not_delivered_again_to_the_group(bus: Bus, topic: str) -> None:
    group = f"g-{uuid.uuid4().hex}"
    await bus.publish(topic, messages(["a"], 10))
    await consume(bus, topic, group, until=10)

    await bus.publish(topic, messages(["b"], 3))
    again = await consume(bus, topic, group, until=3)

    assert [m.value for m in again] == [b"b:0", b"b:1", b"b:2"]


async def test_a_consumer_that_crashes_before_committing_gets_the_same_messages_again(
    bus: Bus, topic: str
) -> None:
    group = f"g-{uuid.uuid4().hex}"
    await bus.publish(topic, messages(["a"], 10))

    class Crash(Exception):
        pass

    done: list[Message] = []
    with pytest.raises(Crash):
        async with asyncio.timeout(30), bus.subscribe([topic], group=group) as subscription:
            async for batch in subscription.batches(max_records=10, max_wait=0.5):
                for message in batch:
                    if message.value == b"a:6":
                        raise Crash  # dies while handling a:6, after committing a:0..a:5
                    done.append(message)
                    await subscription.commit([message])

    redelivered = await consume(bus, topic, group, until=4)

    assert [m.value for m in done] == [f"a:{i}".encode() for i in range(6)]
    assert [m.value for m in redelivered] == [b"a:6", b"a:7", b"a:8", b"a:9"]


async def test_publishing_to_an_unreachable_backend_raises_a_retriable_error(
    bus: Bus, topic: str, tmp_path: Path
) -> None:
    if isinstance(bus, KafkaBus):
        settings = BusSettings(
            bus=BusKind.KAFKA, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout=1.0
        )
    else:
        settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "gone" / "bus.sqlite3")

    with pytest.raises(BusUnavailable) as raised:
        async with open_bus(settings, topics=[topic]) as unreachable:
            if not isinstance(unreachable, KafkaBus):
                shutil.rmtree(tmp_path / "gone")  # the disk under the log goes away
                (tmp_path / "gone").write_text("not a directory")
            assert not await unreachable.ready()
            await unreachable.publish(topic, messages(["a"], 1))
    assert raised.value.retriable


async def test_a_reachable_backend_reports_ready(bus: Bus) -> None:
    assert await bus.ready()


@pytest.mark.kafka
async def test_two_kafka_consumers_in_one_group_split_the_partitions(kafka: KafkaBroker, topic: str) -> None:
    settings = BusSettings(
        bus=BusKind.KAFKA,
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_partitions=4,
        publish_timeout=10.0,
    )
    group = f"g-{uuid.uuid4().hex}"
    keys = [f"lead-{n}" for n in range(40)]
    received: tuple[list[Message], list[Message]] = ([], [])
    stop = asyncio.Event()

    async def member(into: list[Message]) -> None:
        async with group_bus.subscribe([topic], group=group) as subscription:
            async for batch in subscription.batches(max_records=50, max_wait=0.3):
                into.extend(batch)
                await subscription.commit(batch)
                if stop.is_set():
                    return

    async with open_bus(settings, topics=[topic]) as group_bus, asyncio.timeout(60):
        members = [asyncio.create_task(member(into)) for into in received]
        while not (received[0] and received[1]):  # until both members joined and were assigned
            await group_bus.publish(topic, messages(keys, 1))
            await asyncio.sleep(0.3)
        settled = (len(received[0]), len(received[1]))
        for _ in range(5):  # the group is stable now: every partition has exactly one reader
            await group_bus.publish(topic, messages(keys, 1))
            await asyncio.sleep(0.3)
        while sum(map(len, received)) - sum(settled) < 5 * len(keys):  # noqa: ASYNC110 (members append; polling is simplest)
            await asyncio.sleep(0.1)
        stop.set()  # members see it at their next (possibly empty) batch
        await asyncio.gather(*members)

    after = [into[start:] for into, start in zip(received, settled, strict=True)]
    assert after[0] and after[1]
    assert {m.partition for m in after[0]}.isdisjoint({m.partition for m in after[1]})
    assert {m.key for m in after[0]}.isdisjoint({m.key for m in after[1]})


@pytest.mark.kafka
async def test_the_kafka_producer_is_idempotent_with_a_broker_assigned_producer_id(
    kafka: KafkaBroker, topic: str
) -> None:
    settings = BusSettings(bus=BusKind.KAFKA, kafka_bootstrap_servers=kafka.bootstrap_servers)
    async with open_bus(settings, topics=[topic]) as bus:
        await bus.publish(topic, messages(["a"], 1))
        assert isinstance(bus, KafkaBus)
        producer = bus._producer
        assert producer is not None
        assert producer._txn_manager is not None, "idempotence disabled"
        assert producer._txn_manager.producer_id >= 0, "the broker assigned no producer id"


async def test_the_local_log_allows_one_active_consumer_per_group(tmp_path: Path, topic: str) -> None:
    settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus.sqlite3")
    async with open_bus(settings, topics=[topic]) as bus, bus.subscribe([topic], group="only-one"):
        with pytest.raises(BusError, match="already has an active consumer"):
            async with bus.subscribe([topic], group="only-one"):
                pass


async def test_a_subscription_reports_how_far_behind_it_is(bus: Bus, topic: str) -> None:
    await bus.publish(topic, messages(["a"], 10))
    async with asyncio.timeout(30), bus.subscribe([topic], group=f"g-{uuid.uuid4().hex}") as subscription:
        read: list[Message] = []
        async for batch in subscription.batches(max_records=4, max_wait=0.5):
            read.extend(batch)
            if read:
                break
        assert await subscription.lag() == 10 - len(read)
