"""The sync consumer loop: decode -> handle in one transaction -> commit the offset.

At least once: offsets are committed only after the batch's transactions committed, and the inbox
makes a redelivered event a no-op. A message that cannot be decoded, or whose handling keeps
failing for a reason other than a concurrent update, goes to the dead-letter topic with the reason
and the partition moves on: one poison message never wedges a lead's partition.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, Message, OutgoingMessage
from onefunnel.shared.events import SourceEvent
from onefunnel.shared.settings import TopicSettings
from onefunnel.sync import instruments
from onefunnel.sync.handler import Conflict, Handled, Rules, handle

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 8  # concurrent updates of one lead settle within a few tries


async def run_consumer(
    *,
    bus: Bus,
    topics: TopicSettings,
    group: str,
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
    on_change: Callable[[], None],
) -> None:
    """Consume source events until cancelled."""
    async with bus.subscribe([topics.topic_source_events], group=group) as subscription:
        async for batch in subscription.batches(max_records=200, max_wait=1.0):
            for message in batch:
                await _process(message, bus=bus, topics=topics, sessions=sessions, rules=rules)
            if batch:
                await subscription.commit(batch)
                on_change()
            instruments.CONSUMER_LAG.labels("sync").set(await subscription.lag())


async def _process(
    message: Message,
    *,
    bus: Bus,
    topics: TopicSettings,
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
) -> None:
    try:
        event = envelope.decode(message)
    except envelope.EnvelopeError as error:
        await _dead_letter(bus, topics, message, reason="undecodable", detail=str(error))
        return
    if not isinstance(event, SourceEvent):
        await _dead_letter(bus, topics, message, reason="undecodable", detail="not a SourceEvent")
        return
    try:
        handled = await apply(sessions, event, rules=rules)
    except Exception as error:  # a bug or a poison event: park it, keep the partition moving
        log.exception("cannot process event %s", event.id)
        await _dead_letter(bus, topics, message, reason="unprocessable", detail=type(error).__name__)
        return
    instruments.EVENTS_PROCESSED.labels(handled.outcome).inc()
    log.info(
        "event %s %s",
        event.id,
        handled.outcome,
        extra={"event_id": str(event.id), "lead_id": str(handled.lead_id), "outcome": handled.outcome},
    )


async def apply(sessions: async_sessionmaker[AsyncSession], event: SourceEvent, *, rules: Rules) -> Handled:
    """Handle `event` in a transaction of its own, again if another one changed the lead first."""
    for attempt in range(CONFLICT_RETRIES):
        try:
            async with sessions() as session, session.begin():
                return await handle(session, event, rules=rules, now=datetime.now(UTC))
        except (Conflict, IntegrityError):
            await asyncio.sleep(0.01 * 2**attempt)  # read the lead again and decide anew
    raise Conflict(f"event {event.id} kept conflicting after {CONFLICT_RETRIES} tries")


async def _dead_letter(
    bus: Bus, topics: TopicSettings, message: Message, *, reason: str, detail: str
) -> None:
    """Park a message with its reason; the raw bytes and headers stay as they were for a replay."""
    parked = OutgoingMessage(
        key=message.key,
        value=message.value,
        headers=(
            *message.headers,
            ("onefunnel_service", b"sync"),
            ("onefunnel_reason", f"{reason}: {detail}".encode()),
            ("onefunnel_origin", f"{message.topic}/{message.partition}/{message.offset}".encode()),
        ),
    )
    await bus.publish(topics.topic_dead_letters, [parked])
    instruments.DEAD_LETTERS.labels("sync", reason).inc()
    instruments.EVENTS_PROCESSED.labels("dead_letter").inc()
