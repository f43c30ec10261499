"""The sync consumer loop: decode -> handle the batch in one transaction -> commit the offsets.

At least once: offsets are committed only after the batch's transaction committed, and the inbox
makes a redelivered event a no-op. A batch whose transaction fails is rolled back. After a conflict
(another transaction changed one of its leads or linked one of its records) it is planned and tried
again as a batch; after anything else, or conflicts that persist, it is handled again one event per
transaction: a message that cannot be decoded, or whose handling keeps failing for a reason other
than a concurrent update, goes to the dead-letter topic with the reason and the partition moves on,
so one poison message never wedges a lead's partition.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, Message
from onefunnel.shared.database import database_ready
from onefunnel.shared.dead_letters import parked
from onefunnel.shared.events import SourceEvent
from onefunnel.shared.settings import TopicSettings
from onefunnel.sync import instruments
from onefunnel.sync.batch import handle_batch
from onefunnel.sync.handler import Conflict, Handled, Rules, handle

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 8  # concurrent updates of one lead settle within a few tries
BATCH_CONFLICT_RETRIES = 3  # then the batch is handled one event per transaction, each retried on its own


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
        # One transaction per batch, so up to 500 events share its round trips and its commit (as in
        # metrics); a quiet topic still yields small batches at once.
        async for batch in subscription.batches(max_records=500, max_wait=1.0):
            events = [(m, await _decode(m, bus=bus, topics=topics)) for m in batch]
            decoded = [(m, e) for m, e in events if e is not None]
            handled = await _apply_all(sessions, [e for _, e in decoded], rules=rules)
            if handled is None:  # one event per transaction, each retried, a poison one dead-lettered
                for message, event in decoded:
                    await _process(message, event, bus=bus, topics=topics, sessions=sessions, rules=rules)
            else:
                for (_, event), result in zip(decoded, handled, strict=True):
                    _count(event, result)
            if batch:
                await subscription.commit(batch)
                on_change()
            instruments.CONSUMER_LAG.labels("sync").set(await subscription.lag())


async def _decode(message: Message, *, bus: Bus, topics: TopicSettings) -> SourceEvent | None:
    try:
        event = envelope.decode(message)
    except envelope.EnvelopeError as error:
        await _dead_letter(bus, topics, message, reason="undecodable", detail=str(error))
        return None
    if not isinstance(event, SourceEvent):
        await _dead_letter(bus, topics, message, reason="undecodable", detail="not a SourceEvent")
        return None
    return event


async def _apply_all(
    sessions: async_sessionmaker[AsyncSession], events: list[SourceEvent], *, rules: Rules
) -> list[Handled] | None:
    """Handle `events` in order in one transaction; None if it failed (and nothing of it was kept)."""
    if not events:
        return []
    for attempt in range(BATCH_CONFLICT_RETRIES):
        try:
            async with sessions() as session, session.begin():
                now = datetime.now(UTC)
                return await handle_batch(session, events, rules=rules, now=now)
        except (Conflict, IntegrityError):  # another transaction (a write-back linking a record) came first
            await asyncio.sleep(0.01 * 2**attempt)  # planned again, on what it committed
        except Exception:  # a bug or a poison event: each event alone will tell which
            log.warning("batch of %d events failed; handling them one by one", len(events), exc_info=True)
            instruments.BATCH_FALLBACKS.labels("error").inc()
            return None
    instruments.BATCH_FALLBACKS.labels("conflict").inc()
    return None


async def _process(
    message: Message,
    event: SourceEvent,
    *,
    bus: Bus,
    topics: TopicSettings,
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
) -> None:
    try:
        handled = await apply(sessions, event, rules=rules)
    except Exception as error:  # a bug or a poison event: park it, keep the partition moving
        # ... unless the database is down, which is no fault of the event: then this raises, and the
        # loop restarts later without committing, so the event is handled once the database is back.
        await database_ready(sessions.kw["bind"])
        log.exception("cannot process event %s", event.id)
        await _dead_letter(bus, topics, message, reason="unprocessable", detail=type(error).__name__)
        return
    _count(event, handled)


def _count(event: SourceEvent, handled: Handled) -> None:
    instruments.EVENTS_PROCESSED.labels(handled.outcome).inc()
    # At DEBUG: a line per event cost ~5 % of sync's CPU, and the counter above keeps every outcome
    # (the audit table every decision) at any level.
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
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
    """Park a message with its reason; the partition moves on."""
    await bus.publish(
        topics.topic_dead_letters, [parked(message, service="sync", reason=reason, detail=detail)]
    )
    instruments.DEAD_LETTERS.labels("sync", reason).inc()
    instruments.EVENTS_PROCESSED.labels("dead_letter").inc()
