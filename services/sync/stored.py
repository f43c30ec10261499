"""What a lead's decisions depend on besides its row (history, links, expected echoes), in one query."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    DateTime,
    Float,
    Integer,
    String,
    Uuid,
    bindparam,
    cast,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from onefunnel.shared.events import ObjectType, SourceSystem
from onefunnel.shared.stages import Stage
from onefunnel.sync import identity
from onefunnel.sync.reconcile import LinkState, StageEvent
from onefunnel.sync.tables import ExpectedEchoRow, LeadLinkRow, LeadRow, StageEventRow, metadata

ECHO_WINDOW = timedelta(days=1)  # an expected echo older than this is forgotten


@dataclass
class Stored:
    """What a lead's decisions depend on besides the lead row: its history, links and expected echoes."""

    history: list[StageEvent] = field(default_factory=list)
    links: list[LinkState] = field(default_factory=list)
    echoes: list[tuple[SourceSystem, str, int]] = field(default_factory=list)  # oldest first, with row id


async def load_stored(
    session: AsyncSession, lead_ids: list[uuid.UUID], *, now: datetime
) -> dict[uuid.UUID, Stored]:
    """The leads' histories, links and unexpired expected echoes, read in one round trip."""
    await session.flush()  # the query below is not the ORM's: it would not flush what is pending
    stored: dict[uuid.UUID, Stored] = {}
    rows = await session.execute(_STATE_QUERY, {"lead_ids": lead_ids, "since": now - ECHO_WINDOW})
    for kind, lead_id, system, event_id, first, second, third, score, occurred_at, row_id in rows:
        lead = stored.setdefault(lead_id, Stored())
        if kind == "history":
            stage = Stage(first) if first else None
            lead.history.append(
                StageEvent(event_id, SourceSystem(system), stage, second, score, identity.as_utc(occurred_at))
            )
        elif kind == "link":
            lead.links.append(LinkState(SourceSystem(system), ObjectType(first), second, third))
        else:
            lead.echoes.append((SourceSystem(system), first, row_id))
    for lead in stored.values():
        lead.echoes.sort(key=lambda echo: echo[2])
    return stored


def known_fields(lead: LeadRow) -> frozenset[str]:
    """The canonical fields the lead has a value for, which the sales-ready rule may require."""
    return frozenset(name for name in ("email", "owner_id", "campaign", "lead_source") if getattr(lead, name))


def _state_query() -> CompoundSelect[*tuple[Any, ...]]:
    """One row per history entry (stage, raw), link (object type, record id, stage_raw) and echo (value)."""
    lead_ids = bindparam("lead_ids", type_=Uuid, expanding=True)
    since = bindparam("since", type_=DateTime(timezone=True))
    no_text = cast(null(), String)
    no_id, no_score, no_time = cast(null(), Uuid), cast(null(), Float), cast(null(), DateTime(timezone=True))
    no_row = cast(null(), Integer)
    h, k, e = (metadata.tables[row.__tablename__].c for row in (StageEventRow, LeadLinkRow, ExpectedEchoRow))
    return union_all(
        select(
            literal("history"),
            h.lead_id,
            h.system,
            h.event_id,
            h.stage,
            h.raw,
            no_text,
            h.score,
            h.occurred_at,
            no_row,
        ).where(h.lead_id.in_(lead_ids)),
        select(
            literal("link"),
            k.lead_id,
            k.system,
            no_id,
            k.object_type,
            k.record_id,
            k.stage_raw,
            no_score,
            no_time,
            no_row,
        ).where(k.lead_id.in_(lead_ids)),
        select(
            literal("echo"), e.lead_id, e.system, no_id, e.value, no_text, no_text, no_score, no_time, e.id
        ).where(e.lead_id.in_(lead_ids), e.created_at >= since),
    )


# Built once: building it and its cache key again for every event cost more than running it.
_STATE_QUERY = _state_query()
