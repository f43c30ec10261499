"""What an applied decision sets in motion, written in the event's transaction.

The outbox rows that carry LeadStageChanged to the bus, the write-back jobs to the other systems,
and the echoes those writes will cause (so their webhooks are recognised when they come back).
"""

import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from onefunnel.shared.events import (
    Attribution,
    Cause,
    LeadStageChanged,
    ObjectType,
    SourceEvent,
    SourceSystem,
    to_json,
)
from onefunnel.sync.reconcile import Decision
from onefunnel.sync.tables import ColumnValues, ExpectedEchoRow, LeadLinkRow, LeadRow, WriteRow

_TRANSITION_NAMESPACE = uuid.UUID("0e5c2b1a-9f7d-4c3e-8a61-5d4b3c2a1f0e")


async def consume_echo(session: AsyncSession, lead_id: uuid.UUID, echo: tuple[SourceSystem, str]) -> None:
    system, value = echo
    oldest = await session.scalar(
        select(col(ExpectedEchoRow.id))
        .where(
            col(ExpectedEchoRow.lead_id) == lead_id,
            col(ExpectedEchoRow.system) == system,
            col(ExpectedEchoRow.value) == value,
        )
        .order_by(col(ExpectedEchoRow.id))
        .limit(1)
    )
    if oldest is not None:
        await session.execute(delete(ExpectedEchoRow).where(col(ExpectedEchoRow.id) == oldest))


def outbox_values(
    lead: LeadRow, event: SourceEvent, decision: Decision, *, now: datetime
) -> list[ColumnValues]:
    """The outbox rows, as column values, of the LeadStageChanged events the decision's moves are."""
    rows: list[ColumnValues] = []
    for move in decision.moves:
        transition = LeadStageChanged(
            # Derived, not random: handling the same event again yields the same transition id.
            id=uuid.uuid5(
                _TRANSITION_NAMESPACE, f"{lead.id}:{move.event_id}:{move.from_stage}:{move.to_stage}"
            ),
            lead_id=lead.id,
            from_stage=move.from_stage,
            to_stage=move.to_stage,
            occurred_at=move.occurred_at,
            recorded_at=now,
            cause=Cause(
                system=move.system,
                source_event_id=move.event_id,
                event_type=event.event_type,
                reason=move.reason,
            ),
            attribution=Attribution(
                campaign=lead.campaign,
                lead_source=lead.lead_source,
                origin_system=SourceSystem(lead.origin_system) if lead.origin_system else None,
            ),
            owner_id=lead.owner_id,
        )
        rows.append(
            {
                "event_id": transition.id,
                "message_key": transition.key,
                "payload": to_json(transition).decode(),
                "created_at": now,
            }
        )
    return rows


def write_values(
    lead_id: uuid.UUID, event: SourceEvent, decision: Decision, *, now: datetime
) -> list[tuple[ColumnValues, ColumnValues]]:
    """A write-back job per write of the decision, with the echo its webhook will be, as column values."""
    return [
        (
            {
                "lead_id": lead_id,
                "system": write.system,
                "stage": write.stage,
                "value": write.value,
                "backward": write.backward,
                "create": write.create,
                "status": "pending",
                "next_attempt_at": now,
                "cause_event_id": event.id,
                "occurred_at": event.occurred_at,
                "created_at": now,
            },
            {"lead_id": lead_id, "system": write.system, "value": write.value, "created_at": now},
        )
        for write in decision.writes
    ]


async def supersede_older_writes(session: AsyncSession, lead_id: uuid.UUID, decision: Decision) -> None:
    """Only the newest stage matters: an older pending write to the same system must not land after it."""
    if not decision.writes:
        return
    await session.execute(
        update(WriteRow)
        .where(
            col(WriteRow.lead_id) == lead_id,
            col(WriteRow.system).in_([write.system for write in decision.writes]),
            col(WriteRow.status) == "pending",
        )
        .values(status="superseded")
    )


async def delete_elsewhere(
    session: AsyncSession, event: SourceEvent, *, writable: Mapping[SourceSystem, ObjectType], now: datetime
) -> None:
    """The propagate policy: delete the lead's records in the other systems too, and unlink them now."""
    link = await session.get(LeadLinkRow, (event.source.value, event.object_id))
    if link is None:
        return
    others = (
        await session.scalars(select(LeadLinkRow).where(col(LeadLinkRow.lead_id) == link.lead_id))
    ).all()
    for other in others:
        system = SourceSystem(other.system)
        if system is event.source or writable.get(system) != other.object_type:
            continue
        session.add(
            WriteRow(
                lead_id=link.lead_id,
                system=system,
                stage="",
                value="",
                delete=True,
                record_id=other.record_id,
                status="pending",
                next_attempt_at=now,
                cause_event_id=event.id,
                occurred_at=event.occurred_at,
                created_at=now,
            )
        )
        await session.delete(other)
