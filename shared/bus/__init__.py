"""The event bus: Kafka in production, an embedded SQLite log on one machine (see base.py)."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from onefunnel.shared.bus.base import (
    Bus,
    BusError,
    BusUnavailable,
    Message,
    MessageTooLarge,
    OutgoingMessage,
    Subscription,
)
from onefunnel.shared.bus.kafka import KafkaBus
from onefunnel.shared.bus.local import LocalBus
from onefunnel.shared.settings import BusKind, BusSettings

__all__ = [
    "Bus",
    "BusError",
    "BusUnavailable",
    "Message",
    "MessageTooLarge",
    "OutgoingMessage",
    "Subscription",
    "open_bus",
]


@asynccontextmanager
async def open_bus(settings: BusSettings, *, topics: Sequence[str]) -> AsyncIterator[Bus]:
    """Open the configured backend and close it (flushing the producer) on exit.

    `topics` are created on Kafka, if missing, when the bus first connects.
    """
    bus: Bus
    if settings.bus is BusKind.KAFKA:
        bus = KafkaBus(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=settings.kafka_client_id,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            publish_timeout=settings.publish_timeout,
            max_message_bytes=settings.kafka_max_message_bytes,
            topics=topics,
        )
    else:
        bus = LocalBus(path=settings.local_bus_path)
    try:
        yield bus
    finally:
        await bus.close()
