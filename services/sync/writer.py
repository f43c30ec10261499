"""The write-back worker: carry pending writes to one platform, in order, with retries.

Replicas share the queue: a write is claimed (status `claimed`, with a lease) before it is made,
and a lead whose write is in flight anywhere waits, so two replicas never make the same call and
never reorder one lead's writes.

Each write was committed with the change that caused it. The worker takes the oldest due write of
each lead, calls the platform outside any transaction, then records the result: done (with the sync
lag), failed (permanent: the platform's error is kept for GET /v1/sync/failures and `onefunnel
replay`), or pending again after a backoff (the platform was unreachable or rate-limited). Writes
are never dropped, and an older write never lands after a newer one (the handler supersedes it).
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import and_, delete, exists, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col

from onefunnel.shared import database
from onefunnel.sync import instruments
from onefunnel.sync.identity import as_utc
from onefunnel.sync.platforms.base import PlatformClient, PlatformError
from onefunnel.sync.tables import ExpectedEchoRow, LeadLinkRow, LeadRow, WriteRow

log = logging.getLogger(__name__)

BATCH = 20
GAUGE_EVERY_SECONDS = 5.0
MAX_BACKOFF = timedelta(minutes=10)
# A claimed write whose replica died is taken up again after this; a live replica finishes well within it.
CLAIM_LEASE = timedelta(minutes=5)
LOCK_WAIT_MS = 200  # how long marking writes done at once waits for a link the consumer's batch holds
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout
_TAKEABLE = ("pending", "claimed")  # with next_attempt_at due: a retry's time, or a claim's lease


@dataclass(frozen=True)
class _Claimed:
    """A write this worker holds, with what making it needs: the lead's record here, else its email."""

    row: WriteRow
    record_id: str | None
    email: str | None


def _deletes(row: WriteRow) -> bool:
    """A propagated deletion of a record: no link to look up or to remember."""
    return row.delete and bool(row.record_id)


class WriteBack:
    def __init__(self, *, client: PlatformClient, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.client = client
        self.sessions = sessions
        self.system = client.system.value
        self._gauge_due = 0.0  # loop time at which the pending gauge is counted again

    async def run(self, wake: asyncio.Event) -> None:
        """Write until cancelled; `wake` is set when new writes were committed, else poll every second."""
        while True:
            if await self.write_due() == BATCH:
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=1.0)

    async def write_due(self) -> int:
        """Claim and make the due writes, one per lead at a time, concurrently across leads; count them."""
        now = datetime.now(UTC)
        async with self.sessions() as session:
            busy = aliased(
                WriteRow
            )  # a lead with a write in flight (here or in another replica) waits its turn
            rows = (
                await session.scalars(
                    select(WriteRow)
                    .where(
                        col(WriteRow.status).in_(_TAKEABLE),  # a claim whose lease ran out is takeable again
                        col(WriteRow.system) == self.system,
                        col(WriteRow.next_attempt_at) <= now,
                        ~exists().where(
                            col(busy.lead_id) == col(WriteRow.lead_id),
                            col(busy.system) == self.system,
                            col(busy.status) == "claimed",
                            col(busy.next_attempt_at) > now,
                        ),
                    )
                    .order_by(col(WriteRow.id))
                    .limit(BATCH * 4)
                )
            ).all()
            await self._count_pending(session)
        first_per_lead: dict[object, WriteRow] = {}
        for row in rows:
            first_per_lead.setdefault(row.lead_id, row)
        due = await self._claim(list(first_per_lead.values())[:BATCH], now=now)
        written = await asyncio.gather(*(self._write(claimed) for claimed in due))
        made = [
            (claimed.row, record) for claimed, record in zip(due, written, strict=True) if record is not None
        ]
        await self._finish_done(made)
        return len(due)

    async def _count_pending(self, session: AsyncSession) -> None:
        """Refresh the pending gauge, every few seconds rather than at every turn of the loop."""
        if asyncio.get_running_loop().time() < self._gauge_due:
            return
        self._gauge_due = asyncio.get_running_loop().time() + GAUGE_EVERY_SECONDS
        pending = await session.scalar(
            select(func.count())
            .select_from(WriteRow)
            .where(col(WriteRow.status).in_(("pending", "claimed")), col(WriteRow.system) == self.system)
        )
        instruments.WRITES_PENDING.labels(self.system).set(pending or 0)

    async def _claim(self, rows: list[WriteRow], *, now: datetime) -> list[_Claimed]:
        """Take the writes until CLAIM_LEASE passes, but those another replica took first."""
        if not rows:
            return []
        takeable = (
            col(WriteRow.id).in_([row.id for row in rows]),
            col(WriteRow.status).in_(_TAKEABLE),
            col(WriteRow.next_attempt_at) <= now,
        )
        # A row another transaction holds is skipped, not waited for: the consumer holds only rows it is
        # superseding, and waiting on it while holding other rows could deadlock with its batch.
        unlocked = select(col(WriteRow.id)).where(*takeable).with_for_update(skip_locked=True)
        async with self.sessions() as session, session.begin():
            claimed = set(
                (
                    await session.scalars(
                        update(WriteRow)
                        .where(col(WriteRow.id).in_(unlocked), *takeable)
                        .values(status="claimed", next_attempt_at=now + CLAIM_LEASE)
                        .returning(col(WriteRow.id))
                        .execution_options(synchronize_session=False)
                    )
                ).all()
            )
            ours = [row for row in rows if row.id in claimed]
            leads = {row.lead_id for row in ours if not _deletes(row)}
            records, emails = await self._targets(session, leads) if leads else ({}, {})
        return [_Claimed(row, records.get(row.lead_id), emails.get(row.lead_id)) for row in ours]

    async def _targets(
        self, session: AsyncSession, leads: set[UUID]
    ) -> tuple[dict[UUID, str], dict[UUID, str | None]]:
        """Each lead's record in this system (the first found) and its email, in one query."""
        found = await session.execute(
            select(col(LeadRow.id), col(LeadRow.email), col(LeadLinkRow.record_id))
            .outerjoin(
                LeadLinkRow,
                and_(
                    col(LeadLinkRow.lead_id) == col(LeadRow.id),
                    col(LeadLinkRow.system) == self.system,
                    col(LeadLinkRow.object_type) == self.client.object_type,
                ),
            )
            .where(col(LeadRow.id).in_(leads))
        )
        records: dict[UUID, str] = {}
        emails: dict[UUID, str | None] = {}
        for lead_id, email, record_id in found:
            emails[lead_id] = email
            if record_id is not None:
                records.setdefault(lead_id, record_id)
        return records, emails

    async def _write(self, claimed: _Claimed) -> str | None:
        """Make the write; the record it was made to, or None if it failed (and was recorded so)."""
        row = claimed.row
        operation = "delete" if row.delete else "create" if row.create else "write_stage"
        try:
            record_id = await self._call(claimed)
        except PlatformError as error:
            instruments.API_CALLS.labels(self.system, operation, error.code or f"http_{error.status}").inc()
            await self._failed(row, error)
            return None
        instruments.API_CALLS.labels(self.system, operation, "ok").inc()
        instruments.SYNC_LAG.labels(self.system).observe(
            max(0.0, (datetime.now(UTC) - as_utc(row.occurred_at)).total_seconds())
        )
        return record_id

    async def _call(self, claimed: _Claimed) -> str:
        row = claimed.row
        if row.delete and row.record_id:  # as _deletes(row), spelled so that mypy sees a str
            await self.client.delete(row.record_id)
            return row.record_id
        if claimed.record_id is not None:
            await self.client.write_stage(
                record_id=claimed.record_id, stage_value=row.value, backward=row.backward
            )
            return claimed.record_id
        if (
            claimed.email is None
        ):  # its email may still be on the way (HubSpot reports it in an event of its own)
            raise PlatformError(
                "the lead has no email yet to find or create its record by",
                retriable=True,
                code="NO_EMAIL_YET",
            )
        record_id = await self.client.find_by_email(claimed.email) or ""
        if record_id:
            await self.client.write_stage(record_id=record_id, stage_value=row.value, backward=False)
            return record_id
        return await self.client.create(email=claimed.email, stage_value=row.value)

    async def _finish_done(self, made: list[tuple[WriteRow, str]]) -> None:
        """Link each record to its lead with the value just written, and mark the writes done: at once if
        no link is held by the consumer's batch, else one link per transaction."""
        if not made:
            return
        links = {(self.system, record_id): row for row, record_id in made if not _deletes(row)}
        try:
            async with self.sessions() as session, session.begin():
                if session.get_bind().dialect.name == "postgresql":
                    # Give way to the consumer's batch, well before PostgreSQL's deadlock check (1 s) could
                    # pick the batch as the victim: holding links while waiting for another could deadlock.
                    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'"))
                await self._remember(session, links)
                await self._mark_done(session, made)
            return
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
        for key, row in sorted(links.items()):
            async with self.sessions() as session, session.begin():
                await self._remember(session, {key: row})
        async with self.sessions() as session, session.begin():
            await self._mark_done(session, made)

    async def _remember(self, session: AsyncSession, links: dict[tuple[str, str], WriteRow]) -> None:
        """Link the records with the values written; a record's own webhook may have linked it: then
        update the value. In key order, so that two replicas lock them in the same order."""
        if not links:
            return
        upsert = database.insert(session, LeadLinkRow).values(
            [
                {
                    "system": system,
                    "record_id": record_id,
                    "object_type": self.client.object_type,
                    "lead_id": row.lead_id,
                    "stage_raw": row.value,
                }
                for (system, record_id), row in sorted(links.items())
            ]
        )
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=[col(LeadLinkRow.system), col(LeadLinkRow.record_id)],
                set_={"stage_raw": upsert.excluded.stage_raw},
            )
        )

    async def _mark_done(self, session: AsyncSession, made: list[tuple[WriteRow, str]]) -> None:
        await session.execute(
            update(WriteRow)
            .where(col(WriteRow.id).in_([row.id for row, _ in made]), col(WriteRow.status) == "claimed")
            .values(status="done", attempts=col(WriteRow.attempts) + 1, finished_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )

    async def _failed(self, row: WriteRow, error: PlatformError) -> None:
        if not error.retriable:
            log.warning(
                "write %s to %s failed: %s",
                row.id,
                self.system,
                error.code,
                extra={"write_id": row.id, "lead_id": str(row.lead_id), "code": error.code},
            )
            instruments.WRITE_FAILURES.labels(self.system).inc()
            await self._finish_failed(row, error)
            return
        instruments.API_RETRIES.labels(self.system).inc()
        backoff = min(timedelta(seconds=2 ** min(row.attempts, 10)), MAX_BACKOFF)
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(WriteRow)
                .where(col(WriteRow.id) == row.id, col(WriteRow.status) == "claimed")
                .values(
                    status="pending",
                    attempts=row.attempts + 1,
                    next_attempt_at=datetime.now(UTC) + backoff,
                    error_code=error.code,
                    last_error=str(error)[:1000],
                )
            )

    async def _finish_failed(self, row: WriteRow, error: PlatformError) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(WriteRow)
                .where(col(WriteRow.id) == row.id, col(WriteRow.status) == "claimed")
                .values(
                    status="failed",
                    attempts=row.attempts + 1,
                    finished_at=datetime.now(UTC),
                    error_code=error.code,
                    last_error=str(error)[:1000],
                )
            )
            # No webhook will come back for a write that did not happen.
            await session.execute(
                delete(ExpectedEchoRow).where(
                    col(ExpectedEchoRow.lead_id) == row.lead_id,
                    col(ExpectedEchoRow.system) == self.system,
                    col(ExpectedEchoRow.value) == row.value,
                )
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
