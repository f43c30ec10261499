"""The follow-up SLA: leads still in a stage longer than the funnel allows (funnel.yaml `sla`).

Checked periodically from each lead's current stage (current.py). Each breach is stored once (lead,
stage, when it entered), so `onefunnel_sla_breaches_total` counts a breach once even across
restarts, and the gauge of leads in breach right now is recomputed at every check. So is
`onefunnel_leads_in_stage`, which each replica moves only by the events it counts: the check resets
it to the database-wide count, the same in every replica.
"""

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from onefunnel.metrics import current, instruments
from onefunnel.metrics.counting import set_current_stages
from onefunnel.metrics.tables import LeadStageRow, SlaBreachRow
from onefunnel.shared import database
from onefunnel.shared.stages import Stage


async def check_once(
    session: AsyncSession, sla: Mapping[Stage, timedelta], *, now: datetime
) -> dict[Stage, int]:
    """Record new breaches and return how many leads are in breach per stage now.

    Set-based, from each lead's current stage: per stage, one count and one INSERT ... SELECT that
    skips the breaches already stored, whatever the number of leads in breach (tens of thousands
    on a large funnel).
    """
    in_breach: dict[Stage, int] = {}
    for stage, within in sla.items():
        waiting = [col(LeadStageRow.stage) == stage, col(LeadStageRow.entered_at) < now - within]
        in_breach[stage] = int(await session.scalar(select(func.count()).where(*waiting)) or 0)
        found = select(
            col(LeadStageRow.lead_id),
            literal(stage.value),
            col(LeadStageRow.entered_at),
            literal(now, DateTime(timezone=True)),
        ).where(*waiting)
        new = await session.execute(
            database.insert(session, SlaBreachRow)
            .from_select(["lead_id", "stage", "entered_at", "detected_at"], found)
            .on_conflict_do_nothing()
            .returning(col(SlaBreachRow.lead_id))
        )
        instruments.SLA_BREACHES.labels(stage).inc(len(new.all()))
    return in_breach


async def run_sla_checks(
    *, sessions: async_sessionmaker[AsyncSession], sla: Mapping[Stage, timedelta], every: float
) -> None:
    """Check every `every` seconds until cancelled."""
    while True:
        async with sessions() as session, session.begin():
            in_breach = await check_once(session, sla, now=datetime.now(UTC))
            per_stage = await current.per_stage(session)
        for stage, count in in_breach.items():
            instruments.LEADS_IN_SLA_BREACH.labels(stage).set(count)
        set_current_stages(per_stage)
        await asyncio.sleep(every)
