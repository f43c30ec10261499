"""The metrics consumer loop: decode -> store new facts in one transaction -> count -> commit offsets.

At least once, counted once: a redelivered transition finds its fact already stored and is not
counted again. An undecodable message goes to the dead-letter topic and the partition moves on.
"""

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from onefunnel.metrics import instruments
from onefunnel.metrics.counting import observe, set_current_stages
from onefunnel.metrics.facts import leads_per_current_stage, record
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, Message, OutgoingMessage
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
        set_current_stages(await leads_per_current_stage(session))
    async with bus.subscribe([topics.topic_stage_changes], group=group) as subscription:
        async for batch in subscription.batches(max_records=500, max_wait=1.0):
            if batch:
                decoded = [await _decode(bus, topics, message) for message in batch]
                events = [event for event in decoded if event is not None]
                async with sessions() as session, session.begin():
                    counted = await record(session, events)
                observe(counted, campaigns=campaigns)
                instruments.CONSUMED.labels("new").inc(len(counted))
                instruments.CONSUMED.labels("duplicate").inc(len(events) - len(counted))
                await subscription.commit(batch)
            instruments.CONSUMER_LAG.labels("metrics").set(await subscription.lag())


async def _decode(bus: Bus, topics: TopicSettings, message: Message) -> LeadStageChanged | None:
    try:
        event = envelope.decode(message)
    except envelope.EnvelopeError as error:
        detail = str(error)
    else:
        if isinstance(event, LeadStageChanged):
            return event
        detail = "not a LeadStageChanged"
    log.warning(
        "dead-lettering message %s/%s/%s: %s", message.topic, message.partition, message.offset, detail
    )
    headers = (*message.headers, ("onefunnel_service", b"metrics"), ("onefunnel_reason", detail.encode()))
    await bus.publish(
        topics.topic_dead_letters, [OutgoingMessage(key=message.key, value=message.value, headers=headers)]
    )
    instruments.DEAD_LETTERS.labels("metrics", "undecodable").inc()
    return None
