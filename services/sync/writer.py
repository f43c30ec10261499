"""The write-back worker: carry pending writes to one platform, in order, with retries.

Replicas share the queue: a write is claimed (status `claimed`, with a lease) before it is made,
and a lead whose write is in flight anywhere waits, so two replicas never make the same call and
never reorder one lead's writes.

Each write was committed with the change that caused it. The worker takes the oldest due write of
each lead, calls the platform outside any transaction (forward moves of known records together,
where the platform has a batch call), then records the result (write_results.py): done (with the
sync lag), failed (permanent: the platform's error is kept for GET /v1/sync/failures and `onefunnel
replay`), or pending again after a backoff (the platform was unreachable or rate-limited). Writes
are never dropped, and an older write never lands after a newer one (the handler supersedes it).
"""

import asyncio
import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col

from onefunnel.sync import instruments
from onefunnel.sync.identity import as_utc
from onefunnel.sync.platforms.base import PlatformClient, PlatformError, StageWrite
from onefunnel.sync.tables import LeadLinkRow, LeadRow, WriteRow
from onefunnel.sync.write_results import deletes, finish_done, record_refusal

BATCH = 100  # writes claimed per turn: one HubSpot batch update's worth
GATHER_SECONDS = 0.1  # after a wake-up, the writes of the next few consumer batches join the turn
GAUGE_EVERY_SECONDS = 5.0
# A claimed write whose replica died is taken up again after this; a live replica finishes well within it.
CLAIM_LEASE = timedelta(minutes=5)
_TAKEABLE = ("pending", "claimed")  # with next_attempt_at due: a retry's time, or a claim's lease


@dataclass(frozen=True)
class _Claimed:
    """A write this worker holds, with what making it needs: the lead's record here, else its email."""

    row: WriteRow
    record_id: str | None
    email: str | None
    found: bool = False  # the record was found by the email just now: written forward, as a new link


def _batched(claimed: _Claimed) -> bool:
    """A forward move of a record we know: one of many in a batch call where the platform has one."""
    row = claimed.row
    return not row.delete and claimed.record_id is not None and (claimed.found or not row.backward)


def _unlinked(claimed: _Claimed) -> bool:
    """A write to a platform where the lead has no record linked yet, but an email to find one by."""
    return not claimed.row.delete and claimed.record_id is None and claimed.email is not None


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
            # Woken at every consumer commit, a turn took a few writes, and its fixed cost (claim, look-up,
            # call, done) was spent again and again: a short wait makes the turns fewer and fuller.
            await asyncio.sleep(GATHER_SECONDS)

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
                    .limit(BATCH * 2)  # older writes of a lead are superseded: few rows share a lead
                )
            ).all()
            await self._count_pending(session)
        first_per_lead: dict[object, WriteRow] = {}
        for row in rows:
            first_per_lead.setdefault(row.lead_id, row)
        taken = await self._claim(list(first_per_lead.values())[:BATCH], now=now)
        due = await self._look_up(taken)
        batched = [claimed for claimed in due if _batched(claimed)]
        singles = [claimed for claimed in due if not _batched(claimed)]
        batch, single = await asyncio.gather(
            self._write_batch(batched), asyncio.gather(*(self._write(claimed) for claimed in singles))
        )
        written = zip([*batched, *singles], [*batch, *single], strict=True)
        made = [(claimed.row, record) for claimed, record in written if record is not None]
        await finish_done(self.sessions, made, object_type=self.client.object_type.value)
        return len(taken)

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
            leads = {row.lead_id for row in ours if not deletes(row)}
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

    async def _look_up(self, due: list[_Claimed]) -> list[_Claimed]:
        """Find by email, in one go, the records of the leads not linked here yet; a failed lookup fails
        (for now) the writes that needed it."""
        unlinked = [claimed for claimed in due if _unlinked(claimed)]
        if not unlinked:
            return due
        try:
            found = await self.client.find_by_emails([str(claimed.email) for claimed in unlinked])
        except PlatformError as error:
            for claimed in unlinked:
                await self._outcome(claimed.row, "write_stage", None, error)
            return [claimed for claimed in due if not _unlinked(claimed)]
        return [
            replace(claimed, record_id=found[str(claimed.email)], found=True)
            if _unlinked(claimed) and str(claimed.email) in found
            else claimed
            for claimed in due
        ]

    async def _write_batch(self, due: list[_Claimed]) -> list[str | None]:
        """Forward moves of records we know, in as few calls as the platform allows."""
        if not due:
            return []
        writes = [
            StageWrite(record_id=str(claimed.record_id), stage_value=claimed.row.value) for claimed in due
        ]
        errors = await self.client.write_stages(writes)
        return [
            await self._outcome(claimed.row, "write_stage", claimed.record_id, error)
            for claimed, error in zip(due, errors, strict=True)
        ]

    async def _write(self, claimed: _Claimed) -> str | None:
        """Make the write; the record it was made to, or None if it failed (and was recorded so)."""
        row = claimed.row
        operation = "delete" if row.delete else "create" if row.create else "write_stage"
        try:
            record_id = await self._call(claimed)
        except PlatformError as error:
            return await self._outcome(row, operation, None, error)
        return await self._outcome(row, operation, record_id, None)

    async def _outcome(
        self, row: WriteRow, operation: str, record_id: str | None, error: PlatformError | None
    ) -> str | None:
        """Count a write made (and its lag), or record why not; the record it was made to, or None."""
        if error is not None:
            instruments.API_CALLS.labels(self.system, operation, error.code or f"http_{error.status}").inc()
            await record_refusal(self.sessions, row, error)
            return None
        instruments.API_CALLS.labels(self.system, operation, "ok").inc()
        instruments.SYNC_LAG.labels(self.system).observe(
            max(0.0, (datetime.now(UTC) - as_utc(row.occurred_at)).total_seconds())
        )
        return record_id

    async def _call(self, claimed: _Claimed) -> str:
        row = claimed.row
        if row.delete and row.record_id:  # as deletes(row), spelled so that mypy sees a str
            await self.client.delete(row.record_id)
            return row.record_id
        if claimed.record_id is not None:  # a backward move the platform has no batch call for
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
        return await self.client.create(email=claimed.email, stage_value=row.value)  # not found by it
