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
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col

from onefunnel.sync import instruments
from onefunnel.sync.identity import as_utc
from onefunnel.sync.platforms.base import PlatformClient, PlatformError
from onefunnel.sync.tables import ExpectedEchoRow, LeadLinkRow, LeadRow, WriteRow

log = logging.getLogger(__name__)

BATCH = 20
MAX_BACKOFF = timedelta(minutes=10)
# A claimed write whose replica died is taken up again after this; a live replica finishes well within it.
CLAIM_LEASE = timedelta(minutes=5)
_TAKEABLE = ("pending", "claimed")  # with next_attempt_at due: a retry's time, or a claim's lease


class WriteBack:
    def __init__(self, *, client: PlatformClient, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.client = client
        self.sessions = sessions
        self.system = client.system.value

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
            pending = await session.scalar(
                select(func.count())
                .select_from(WriteRow)
                .where(col(WriteRow.status).in_(("pending", "claimed")), col(WriteRow.system) == self.system)
            )
        instruments.WRITES_PENDING.labels(self.system).set(pending or 0)
        first_per_lead: dict[object, WriteRow] = {}
        for row in rows:
            first_per_lead.setdefault(row.lead_id, row)
        due = [row for row in list(first_per_lead.values())[:BATCH] if await self._claim(row, now=now)]
        await asyncio.gather(*(self._write(row) for row in due))
        return len(due)

    async def _claim(self, row: WriteRow, *, now: datetime) -> bool:
        """Take the write until CLAIM_LEASE passes; False if another replica took it first."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(WriteRow)
                .where(
                    col(WriteRow.id) == row.id,
                    col(WriteRow.status).in_(_TAKEABLE),
                    col(WriteRow.next_attempt_at) <= now,
                )
                .values(status="claimed", next_attempt_at=now + CLAIM_LEASE)
                .execution_options(synchronize_session=False)
            )
            # rowcount must be read before the transaction ends: aiosqlite closes the cursor with it.
            claimed = bool(result.rowcount)  # type: ignore[attr-defined]
        return claimed

    async def _write(self, row: WriteRow) -> None:
        operation = "delete" if row.delete else "create" if row.create else "write_stage"
        try:
            await self._call(row)
        except PlatformError as error:
            instruments.API_CALLS.labels(self.system, operation, error.code or f"http_{error.status}").inc()
            await self._failed(row, error)
            return
        instruments.API_CALLS.labels(self.system, operation, "ok").inc()
        instruments.SYNC_LAG.labels(self.system).observe(
            max(0.0, (datetime.now(UTC) - as_utc(row.occurred_at)).total_seconds())
        )
        await self._finish(row, status="done")

    async def _call(self, row: WriteRow) -> None:
        if row.delete and row.record_id:
            await self.client.delete(row.record_id)
            return
        async with self.sessions() as session, session.begin():
            link = await session.scalar(
                select(LeadLinkRow).where(
                    col(LeadLinkRow.lead_id) == row.lead_id,
                    col(LeadLinkRow.system) == self.system,
                    col(LeadLinkRow.object_type) == self.client.object_type,
                )
            )
            lead = await session.get(LeadRow, row.lead_id)
        if link is not None:
            await self.client.write_stage(
                record_id=link.record_id, stage_value=row.value, backward=row.backward
            )
            record_id = link.record_id
        else:
            email = lead.email if lead else None
            if email is None:  # its email may still be on the way (HubSpot reports it in an event of its own)
                raise PlatformError(
                    "the lead has no email yet to find or create its record by",
                    retriable=True,
                    code="NO_EMAIL_YET",
                )
            record_id = await self.client.find_by_email(email) or ""
            if record_id:
                await self.client.write_stage(record_id=record_id, stage_value=row.value, backward=False)
            else:
                record_id = await self.client.create(email=email, stage_value=row.value)
        await self._remember(row, record_id)

    async def _remember(self, row: WriteRow, record_id: str) -> None:
        """Link the record to the lead with the value just written (its own webhook may have linked it)."""
        for _ in range(2):
            try:
                async with self.sessions() as session, session.begin():
                    existing = await session.get(LeadLinkRow, (self.system, record_id))
                    if existing is None:
                        session.add(
                            LeadLinkRow(
                                system=self.system,
                                record_id=record_id,
                                object_type=self.client.object_type,
                                lead_id=row.lead_id,
                                stage_raw=row.value,
                            )
                        )
                    else:
                        existing.stage_raw = row.value
                return
            except IntegrityError:
                continue  # the record's webhook linked it in the meantime: update that link instead

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
            await self._finish(row, status="failed", error=error)
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

    async def _finish(self, row: WriteRow, *, status: str, error: PlatformError | None = None) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(WriteRow)
                .where(col(WriteRow.id) == row.id, col(WriteRow.status) == "claimed")
                .values(
                    status=status,
                    attempts=row.attempts + 1,
                    finished_at=datetime.now(UTC),
                    error_code=error.code if error else None,
                    last_error=str(error)[:1000] if error else None,
                )
            )
            if error is not None:  # no webhook will come back for a write that did not happen
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
