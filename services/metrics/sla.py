"""The follow-up SLA: leads still in a stage longer than the funnel allows (funnel.yaml `sla`).

Checked periodically from the facts. Each breach is stored once (lead, stage, when it entered), so
`onefunnel_sla_breaches_total` counts a breach once even across restarts, and the gauge of leads in
breach right now is recomputed at every check.
"""

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from onefunnel.metrics import instruments
from onefunnel.metrics.facts import is_latest, utc
from onefunnel.metrics.tables import SlaBreachRow, TransitionRow
from onefunnel.shared.stages import Stage


async def check_once(
    session: AsyncSession, sla: Mapping[Stage, timedelta], *, now: datetime
) -> dict[Stage, int]:
    """Record new breaches and return how many leads are in breach per stage now."""
    in_breach: dict[Stage, int] = {}
    for stage, within in sla.items():
        rows = (
            await session.execute(
                select(col(TransitionRow.lead_id), col(TransitionRow.occurred_at)).where(
                    col(TransitionRow.to_stage) == stage,
                    col(TransitionRow.occurred_at) < now - within,
                    is_latest(),
                )
            )
        ).all()
        in_breach[stage] = len(rows)
        for lead_id, entered_at in rows:
            if await session.get(SlaBreachRow, (lead_id, str(stage), utc(entered_at))) is None:
                session.add(
                    SlaBreachRow(lead_id=lead_id, stage=stage, entered_at=utc(entered_at), detected_at=now)
                )
                instruments.SLA_BREACHES.labels(stage).inc()
    return in_breach


async def run_sla_checks(
    *, sessions: async_sessionmaker[AsyncSession], sla: Mapping[Stage, timedelta], every: float
) -> None:
    """Check every `every` seconds until cancelled."""
    while True:
        async with sessions() as session, session.begin():
            in_breach = await check_once(session, sla, now=datetime.now(UTC))
        for stage, count in in_breach.items():
            instruments.LEADS_IN_SLA_BREACH.labels(stage).set(count)
        await asyncio.sleep(every)
