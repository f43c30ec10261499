"""The Kafka backend, on aiokafka: idempotent producer with acks=all, manual offset commits."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)

from onefunnel.shared.bus.base import BusError, BusUnavailable, Message, MessageTooLarge, OutgoingMessage
from onefunnel.shared.bus.kafka_batches import BatchPublisher
from onefunnel.shared.bus.kafka_partitioner import partition_for

log = logging.getLogger(__name__)

# What a record adds to its key and value at most: our headers (CloudEvents attributes, a few
# hundred bytes) and the record's own framing.
_RECORD_OVERHEAD = 4096


class KafkaBus:
    """Publish to and consume from a Kafka cluster.

    The producer starts on first use and then creates the configured topics that are missing, so
    a service whose broker is down still starts, answers /healthz and reports itself not ready
    until the broker answers.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        client_id: str,
        partitions: int,
        replication_factor: int,
        publish_timeout: float,
        max_message_bytes: int,
        topics: Sequence[str],
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._partitions = partitions
        self._replication_factor = replication_factor
        self._publish_timeout = publish_timeout
        self._max_message_bytes = max_message_bytes
        self._topics = list(topics)
        self._producer: AIOKafkaProducer | None = None
        self._batches: BatchPublisher | None = None
        self._producer_lock = asyncio.Lock()

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap_servers,
                    client_id=self._client_id,
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=int(self._publish_timeout * 1000),
                    linger_ms=1,
                    max_request_size=self._max_message_bytes,
                )
                try:
                    await asyncio.wait_for(producer.start(), self._publish_timeout)
                    await self._ensure_topics()
                except (KafkaError, OSError, TimeoutError, BusUnavailable) as error:
                    await producer.stop()
                    raise BusUnavailable(
                        f"Kafka at {self._bootstrap_servers} is unreachable: {error!r}"
                    ) from error
                self._producer = producer
                self._batches = BatchPublisher(producer)
            return self._producer

    async def _ensure_topics(self) -> None:
        """Create the configured topics that do not exist yet (once, when the producer connects)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap_servers, client_id=self._client_id)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [topic for topic in self._topics if topic not in existing]
            if missing:
                config = {"max.message.bytes": str(self._max_message_bytes)}
                new = [
                    NewTopic(t, self._partitions, self._replication_factor, topic_configs=config)
                    for t in missing
                ]
                with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                    await admin.create_topics(new)
                log.info("created topics", extra={"topics": missing, "partitions": self._partitions})
        except KafkaError as error:
            raise BusUnavailable(f"cannot create topics on {self._bootstrap_servers}: {error!r}") from error
        finally:
            await admin.close()

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:  # refused here, or the broker would refuse the batch it shares
            if len(m.key) + len(m.value) + _RECORD_OVERHEAD > self._max_message_bytes:
                raise MessageTooLarge(
                    f"a message of {len(m.value)} bytes exceeds ONEFUNNEL_KAFKA_MAX_MESSAGE_BYTES "
                    f"({self._max_message_bytes})"
                )
        deadline = asyncio.get_running_loop().time() + self._publish_timeout
        # The lock in _started_producer costs every publish; it is only needed until the producer runs.
        producer = self._producer if self._producer is not None else await self._started_producer()
        assert self._batches is not None  # started with the producer
        try:
            # Known metadata answers at once; otherwise aiokafka waits up to its request timeout, ours.
            partitions = sorted(await producer.partitions_for(topic))
            # Partitions chosen once per key, as aiokafka's default partitioner chooses them.
            by_key: dict[bytes, int] = {}
            placed = []
            for m in messages:
                if m.key not in by_key:
                    by_key[m.key] = partition_for(m.key, partitions)
                placed.append((by_key[m.key], m))
            await self._batches.publish(topic, placed, deadline=deadline)
        except TimeoutError as error:
            raise BusUnavailable(f"Kafka did not acknowledge within {self._publish_timeout} s") from error
        except (MessageSizeTooLargeError, RecordListTooLargeError) as error:
            raise MessageTooLarge(f"Kafka refused the batch as too large: {error!r}") from error
        except KafkaError as error:
            if error.retriable:
                raise BusUnavailable(f"Kafka rejected the batch: {error!r}") from error
            raise BusError(f"Kafka rejected the batch: {error!r}") from error

    async def ready(self) -> bool:
        try:
            producer = await self._started_producer()
            async with asyncio.timeout(self._publish_timeout):
                return bool(await producer.client.force_metadata_update())
        except (BusUnavailable, TimeoutError):
            return False

    @asynccontextmanager
    async def subscribe(self, topics: Sequence[str], *, group: str) -> AsyncIterator["KafkaSubscription"]:
        await self._started_producer()  # makes sure the topics exist before the group joins
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=self._max_message_bytes,
        )
        try:
            await consumer.start()
        except KafkaError as error:
            await consumer.stop()
            raise BusUnavailable(f"cannot join group {group!r}: {error!r}") from error
        try:
            yield KafkaSubscription(consumer)
        finally:
            await consumer.stop()

    async def close(self) -> None:
        if self._producer is not None:
            assert self._batches is not None
            await self._batches.close()
            await self._producer.stop()  # flushes what is still buffered
            self._producer = None
            self._batches = None


class KafkaSubscription:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def batches(self, *, max_records: int = 500, max_wait: float = 1.0) -> AsyncIterator[list[Message]]:
        while True:
            fetched = await self._consumer.getmany(timeout_ms=int(max_wait * 1000), max_records=max_records)
            batch = [
                Message(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key or b"",
                    value=record.value or b"",
                    headers=tuple(record.headers),
                )
                for records in fetched.values()
                for record in records
            ]
            yield batch

    async def lag(self) -> int:
        behind = 0
        for partition in self._consumer.assignment():
            highwater = self._consumer.highwater(partition)  # as of the last fetch; None before one
            if highwater is not None:
                behind += max(0, highwater - await self._consumer.position(partition))
        return behind

    async def commit(self, messages: Sequence[Message]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            offsets[tp] = max(offsets.get(tp, 0), m.offset + 1)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as error:
            # The group rebalanced while we worked: the new owner gets these messages again.
            log.warning("offset commit lost to a rebalance; messages will be redelivered: %r", error)
        except KafkaError as error:
            raise BusUnavailable(f"offset commit failed: {error!r}") from error
