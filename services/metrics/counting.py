"""Count consumed transitions: facts first (deduplicated, durable), then the Prometheus metrics."""

from collections.abc import Iterable
from datetime import UTC, datetime

from onefunnel.metrics import instruments
from onefunnel.metrics.facts import Counted, utc
from onefunnel.shared.stages import Stage


def observe(counted: Iterable[Counted], *, campaigns: frozenset[str]) -> None:
    """Update the Prometheus metrics for transitions that are new to the facts."""
    now = datetime.now(UTC)
    for item in counted:
        event = item.event
        stage = str(event.to_stage)
        instruments.TRANSITIONS.labels(str(event.from_stage or instruments.NO_STAGE), stage).inc()
        instruments.ENTRIES.labels(stage, str(event.cause.system)).inc()
        campaign = event.attribution.campaign
        if campaign:
            instruments.CAMPAIGN_ENTRIES.labels(
                campaign if campaign in campaigns else instruments.OTHER_CAMPAIGN, stage
            ).inc()
        if (
            item.previous is not None
            and event.from_stage is not None
            and item.previous.to_stage == event.from_stage
        ):
            stayed = (event.occurred_at - utc(item.previous.occurred_at)).total_seconds()
            instruments.TIME_IN_STAGE.labels(str(event.from_stage)).observe(max(stayed, 0.0))
        if item.is_latest:
            if item.replaced_stage is not None:
                instruments.LEADS_IN_STAGE.labels(item.replaced_stage).dec()
            instruments.LEADS_IN_STAGE.labels(stage).inc()
        instruments.PROCESSING_LATENCY.observe(max((now - event.occurred_at).total_seconds(), 0.0))


def set_current_stages(per_stage: dict[str, int]) -> None:
    """Set the leads-in-stage gauge from the facts (at start-up: the gauge must survive a restart)."""
    for stage in Stage:
        instruments.LEADS_IN_STAGE.labels(stage).set(per_stage.get(stage, 0))
