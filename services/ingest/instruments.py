"""The ingest service's Prometheus metrics, on a registry of its own (served at its /metrics).

Labels are bounded: `source` is one of the platforms, `outcome` and `event_type` are enums.
"""

from prometheus_client import CollectorRegistry, Counter, Histogram

from onefunnel.shared import pipeline_instruments
from onefunnel.shared.events import SourceEventType, SourceSystem

REGISTRY = CollectorRegistry(auto_describe=True)
pipeline_instruments.process(REGISTRY)

OUTCOMES = ("accepted", "duplicate", "ignored", "unauthorized", "invalid", "unavailable", "disabled")

WEBHOOKS_RECEIVED = Counter(
    "onefunnel_webhooks_received_total",
    "Webhook deliveries received, by source and what became of them.",
    ["source", "outcome"],
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "onefunnel_events_published_total",
    "Source events published to the bus and acknowledged by it.",
    ["source", "event_type"],
    registry=REGISTRY,
)
EVENTS_IGNORED = Counter(
    "onefunnel_webhook_events_ignored_total",
    "Events inside accepted deliveries that onefunnel does not use (acknowledged, not published).",
    ["source"],
    registry=REGISTRY,
)
DEAD_LETTERS = pipeline_instruments.dead_letters(REGISTRY)
PUBLISH_SECONDS = Histogram(
    "onefunnel_publish_duration_seconds",
    "Time from publishing a delivery's events to the bus acknowledging them.",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)

# Every label child, created up front (so each series exists from the start) and kept: looking one up
# with `.labels()` costs several times what counting on it does, on every request.
RECEIVED_BY = {(s, o): WEBHOOKS_RECEIVED.labels(s, o) for s in SourceSystem for o in OUTCOMES}
PUBLISHED_BY = {(s, t): EVENTS_PUBLISHED.labels(s, t) for s in SourceSystem for t in SourceEventType}
IGNORED_BY = {s: EVENTS_IGNORED.labels(s) for s in SourceSystem}
PUBLISH_SECONDS_BY = {s: PUBLISH_SECONDS.labels(s) for s in SourceSystem}
DEAD_LETTERED = DEAD_LETTERS.labels("ingest", "invalid_payload")
