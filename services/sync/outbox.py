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
from sqlmodel import col

from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, OutgoingMessage
from onefunnel.shared.events import LeadStageChanged
from onefunnel.shared.settings import TopicSettings
from onefunnel.sync import instruments
from onefunnel.sync.tables import OutboxRow

BATCH = 500
CE_SOURCE = "/onefunnel/sync"


async def relay_once(*, bus: Bus, topics: TopicSettings, sessions: async_sessionmaker[AsyncSession]) -> int:
    """Publish up to one batch of unpublished rows in commit order; return how many."""
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(OutboxRow)
                .where(col(OutboxRow.published_at).is_(None))
                .order_by(col(OutboxRow.id))
                .limit(BATCH)
            )
        ).all()
        if not rows:
            instruments.OUTBOX_BACKLOG.set(0)
            return 0
        await bus.publish(topics.topic_stage_changes, [_message(row) for row in rows])
        await session.execute(
            update(OutboxRow)
            .where(col(OutboxRow.id).in_([row.id for row in rows]))
            .values(published_at=datetime.now(UTC))
        )
        await session.commit()
        backlog = await session.scalar(
            select(func.count()).select_from(OutboxRow).where(col(OutboxRow.published_at).is_(None))
        )
        instruments.OUTBOX_BACKLOG.set(backlog or 0)
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


def _message(row: OutboxRow) -> OutgoingMessage:
    return envelope.encode(LeadStageChanged.model_validate_json(row.payload), source=CE_SOURCE)
