"""The metrics consumer loop: decode -> store new facts in one transaction -> count -> commit offsets.

At least once, counted once: a redelivered transition finds its fact already stored and is not
counted again. An undecodable message goes to the dead-letter topic and the partition moves on; so
does a transition the database refuses: a batch whose transaction fails is stored again one
transition per transaction, and the one that fails alone is parked. While the database is down
nothing is parked: the loop stops without committing and starts again later.
"""

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from onefunnel.metrics import current, instruments
from onefunnel.metrics.counting import observe, set_current_stages
from onefunnel.metrics.facts import Counted, record
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, Message
from onefunnel.shared.database import database_ready
from onefunnel.shared.dead_letters import parked
from onefunnel.shared.events import LeadStageChanged
from onefunnel.shared.settings import TopicSettings

log = logging.getLogger(__name__)


async def run_counter(
    *,
    bus: Bus,
    topics: TopicSettings,
    group: str,
    sessions: async_sessionmaker[AsyncSession],
    campaigns: frozenset[str],
) -> None:
    """Count transitions until cancelled."""
    async with sessions() as session:
        set_current_stages(await current.per_stage(session))
    async with bus.subscribe([topics.topic_stage_changes], group=group) as subscription:
        async for batch in subscription.batches(max_records=500, max_wait=1.0):
            if batch:
                decoded = [(message, await _decode(bus, topics, message)) for message in batch]
                events = [(message, event) for message, event in decoded if event is not None]
                counted = await _store(bus, topics, sessions, events)
                observe(counted, campaigns=campaigns)
                instruments.CONSUMED.labels("new").inc(len(counted))
                instruments.CONSUMED.labels("duplicate").inc(len(events) - len(counted))
                await subscription.commit(batch)
            instruments.CONSUMER_LAG.labels("metrics").set(await subscription.lag())


async def _store(
    bus: Bus,
    topics: TopicSettings,
    sessions: async_sessionmaker[AsyncSession],
    events: list[tuple[Message, LeadStageChanged]],
) -> list[Counted]:
    """Store the batch's new facts in one transaction, or one by one if that fails."""
    try:
        async with sessions() as session, session.begin():
            return await record(session, [event for _, event in events])
    except Exception:
        log.warning("batch of %d transitions failed; storing them one by one", len(events), exc_info=True)
    counted: list[Counted] = []
    for message, event in events:
        try:
            async with sessions() as session, session.begin():
                counted += await record(session, [event])
        except Exception as error:
            await database_ready(sessions.kw["bind"])  # raises while it is down: nothing is parked
            log.exception("cannot store transition %s", event.id)
            await _park(bus, topics, message, reason="unprocessable", detail=type(error).__name__)
    return counted


async def _decode(bus: Bus, topics: TopicSettings, message: Message) -> LeadStageChanged | None:
    try:
        event = envelope.decode(message)
    except envelope.EnvelopeError as error:
        detail = str(error)
    else:
        if isinstance(event, LeadStageChanged):
            return event
        detail = "not a LeadStageChanged"
    await _park(bus, topics, message, reason="undecodable", detail=detail)
    return None


async def _park(bus: Bus, topics: TopicSettings, message: Message, *, reason: str, detail: str) -> None:
    """Put a message on the dead-letter topic with its reason; the partition moves on."""
    log.warning(
        "dead-lettering message %s/%s/%s: %s: %s",
        message.topic,
        message.partition,
        message.offset,
        reason,
        detail,
    )
    await bus.publish(
        topics.topic_dead_letters, [parked(message, service="metrics", reason=reason, detail=detail)]
    )
    instruments.DEAD_LETTERS.labels("metrics", reason).inc()
