"""The outbox relay: publish committed LeadStageChanged rows to the bus, then mark them published.

The rows were written in the same transaction as the change they describe, so a transition is
never lost between the database and the bus. A crash after publishing and before marking
publishes the rows again: consumers deduplicate on the event id (metrics' fact table).
"""

import asyncio
import contextlib
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, OutgoingMessage
from onefunnel.shared.events import LeadStageChanged, from_json
from onefunnel.shared.settings import TopicSettings
from onefunnel.sync import instruments
from onefunnel.sync.tables import OutboxRow

BATCH = 500
CE_SOURCE = "/onefunnel/sync"


async def relay_once(*, bus: Bus, topics: TopicSettings, sessions: async_sessionmaker[AsyncSession]) -> int:
    """Publish up to one batch of unpublished rows in commit order; return how many."""
    outbox = OutboxRow.__table__  # type: ignore[attr-defined]
    async with sessions() as session:
        rows = (
            await session.execute(
                select(outbox.c.id, outbox.c.payload)
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.id)
                .limit(BATCH)
            )
        ).all()
        if rows:
            await bus.publish(topics.topic_stage_changes, [_message(payload) for _, payload in rows])
            await session.execute(
                update(outbox)
                .where(outbox.c.id.in_([row_id for row_id, _ in rows]))
                .values(published_at=datetime.now(UTC))
            )
            await session.commit()
        if len(rows) == BATCH:  # more to come: how many, since each turn reads one batch
            backlog = await session.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
            instruments.OUTBOX_BACKLOG.set(backlog or 0)
        else:  # all read: what the consumer committed since is the next turn's
            instruments.OUTBOX_BACKLOG.set(0)
        return len(rows)


async def run_relay(
    *, bus: Bus, topics: TopicSettings, sessions: async_sessionmaker[AsyncSession], wake: asyncio.Event
) -> None:
    """Relay until cancelled; `wake` is set when a transaction added rows, else poll every second."""
    while True:
        if await relay_once(bus=bus, topics=topics, sessions=sessions) == BATCH:
            continue
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=1.0)


def _message(payload: str) -> OutgoingMessage:
    return envelope.encode(from_json(payload, LeadStageChanged), source=CE_SOURCE)
