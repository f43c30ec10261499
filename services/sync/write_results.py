"""What becomes of a write-back once the platform answered: done, failed, tried again later, or replayed.

A write made links its record to the lead with the value written and is marked done. A write the
platform refused for good is marked failed with the platform's error (GET /v1/sync/failures) and the
echo it would have caused is forgotten; one that may succeed later is pending again after a backoff.
`onefunnel replay` re-drives failed writes once an operator fixed the cause.
"""

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Update, delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from onefunnel.shared import database
from onefunnel.sync import instruments
from onefunnel.sync.platforms.base import PlatformError
from onefunnel.sync.tables import ExpectedEchoRow, LeadLinkRow, WriteRow

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=10)
LOCK_WAIT_MS = 200  # how long marking writes done at once waits for a link the consumer's batch holds
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout


def deletes(row: WriteRow) -> bool:
    """A propagated deletion of a record: no link to look up or to remember."""
    return row.delete and bool(row.record_id)


async def finish_done(
    sessions: async_sessionmaker[AsyncSession], made: list[tuple[WriteRow, str]], *, object_type: str
) -> None:
    """Link each record to its lead with the value just written, and mark the writes done: at once if
    no link is held by the consumer's batch, else one link per transaction."""
    if not made:
        return
    links = {(row.system, record_id): row for row, record_id in made if not deletes(row)}
    try:
        async with sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                # Give way to the consumer's batch, well before PostgreSQL's deadlock check (1 s) could
                # pick the batch as the victim: holding links while waiting for another could deadlock.
                await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'"))
            await _remember(session, links, object_type=object_type)
            await _mark_done(session, made)
        return
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
    for key, row in sorted(links.items()):
        async with sessions() as session, session.begin():
            await _remember(session, {key: row}, object_type=object_type)
    async with sessions() as session, session.begin():
        await _mark_done(session, made)


async def _remember(
    session: AsyncSession, links: dict[tuple[str, str], WriteRow], *, object_type: str
) -> None:
    """Link the records with the values written; a record's own webhook may have linked it: then
    update the value. In key order, so that two replicas lock them in the same order."""
    if not links:
        return
    link = LeadLinkRow.__table__  # type: ignore[attr-defined]
    upsert = database.insert(session, link)
    await session.execute(
        upsert.on_conflict_do_update(
            index_elements=[link.c.system, link.c.record_id], set_={"stage_raw": upsert.excluded.stage_raw}
        ),
        [
            {
                "system": system,
                "record_id": record_id,
                "object_type": object_type,
                "lead_id": row.lead_id,
                "stage_raw": row.value,
            }
            for (system, record_id), row in sorted(links.items())
        ],
    )


async def _mark_done(session: AsyncSession, made: list[tuple[WriteRow, str]]) -> None:
    await session.execute(
        update(WriteRow)
        .where(col(WriteRow.id).in_([row.id for row, _ in made]), col(WriteRow.status) == "claimed")
        .values(status="done", attempts=col(WriteRow.attempts) + 1, finished_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


async def record_refusal(
    sessions: async_sessionmaker[AsyncSession], row: WriteRow, error: PlatformError
) -> None:
    """A permanent refusal fails the write; anything else makes it pending again after a backoff."""
    if not error.retriable:
        log.warning(
            "write %s to %s failed: %s",
            row.id,
            row.system,
            error.code,
            extra={"write_id": row.id, "lead_id": str(row.lead_id), "code": error.code},
        )
        instruments.WRITE_FAILURES.labels(row.system).inc()
        await _finish_failed(sessions, row, error)
        return
    instruments.API_RETRIES.labels(row.system).inc()
    backoff = min(timedelta(seconds=2 ** min(row.attempts, 10)), MAX_BACKOFF)
    async with sessions() as session, session.begin():
        await session.execute(
            _refused(row, error, status="pending", next_attempt_at=datetime.now(UTC) + backoff)
        )


async def _finish_failed(
    sessions: async_sessionmaker[AsyncSession], row: WriteRow, error: PlatformError
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(_refused(row, error, status="failed", finished_at=datetime.now(UTC)))
        # No webhook will come back for a write that did not happen.
        await session.execute(
            delete(ExpectedEchoRow).where(
                col(ExpectedEchoRow.lead_id) == row.lead_id,
                col(ExpectedEchoRow.system) == row.system,
                col(ExpectedEchoRow.value) == row.value,
            )
        )


def _refused(row: WriteRow, error: PlatformError, **values: object) -> Update:
    """The claimed write, one attempt more, with the platform's error and `values`."""
    return (
        update(WriteRow)
        .where(col(WriteRow.id) == row.id, col(WriteRow.status) == "claimed")
        .values(attempts=row.attempts + 1, error_code=error.code, last_error=str(error)[:1000], **values)
    )


async def replay_failed(sessions: async_sessionmaker[AsyncSession], *, system: str | None = None) -> int:
    """Re-drive failed writes that are still the newest for their lead and system; return how many."""
    async with sessions() as session, session.begin():
        query = select(WriteRow).where(col(WriteRow.status) == "failed")
        if system:
            query = query.where(col(WriteRow.system) == system)
        failed = (await session.scalars(query)).all()
        replayed = 0
        for row in failed:
            newer = await session.scalar(
                select(col(WriteRow.id))
                .where(
                    col(WriteRow.lead_id) == row.lead_id,
                    col(WriteRow.system) == row.system,
                    col(WriteRow.id) > row.id,
                )
                .limit(1)
            )
            row.status = "superseded" if newer else "pending"
            row.next_attempt_at = datetime.now(UTC)
            if not newer:
                session.add(
                    ExpectedEchoRow(
                        lead_id=row.lead_id, system=row.system, value=row.value, created_at=datetime.now(UTC)
                    )
                )
                replayed += 1
        return replayed
