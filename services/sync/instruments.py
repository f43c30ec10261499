"""The sync service's Prometheus metrics, on a registry of its own (served at its /metrics).

Labels are bounded: `outcome`, `system`, `operation` and `status` take values from fixed sets.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from onefunnel.shared import pipeline_instruments
from onefunnel.shared.api_requests import api_instruments
from onefunnel.sync.reconcile import Outcome

REGISTRY = CollectorRegistry(auto_describe=True)
pipeline_instruments.process(REGISTRY)

OUTCOMES = [*(o.value for o in Outcome), "duplicate", "dead_letter", "parked"]
SYSTEMS = ("hubspot", "salesforce")
OPERATIONS = ("create", "write_stage", "delete")

EVENTS_PROCESSED = Counter(
    "onefunnel_sync_events_total",
    "Source events processed by sync, by what they did to their lead.",
    ["outcome"],
    registry=REGISTRY,
)
API_CALLS = Counter(
    "onefunnel_platform_api_calls_total",
    "Write-backs through the platforms' APIs by result (ok, or the error class); per record in a batch call.",
    ["system", "operation", "status"],
    registry=REGISTRY,
)
API_RETRIES = Counter(
    "onefunnel_platform_api_retries_total",
    "Write-backs tried again later after a retriable failure.",
    ["system"],
    registry=REGISTRY,
)
WRITE_FAILURES = Counter(
    "onefunnel_sync_write_failures_total",
    "Write-backs that failed permanently (listed at GET /v1/sync/failures).",
    ["system"],
    registry=REGISTRY,
)
SYNC_LAG = Histogram(
    "onefunnel_sync_lag_seconds",
    "From the source's occurred_at to the confirmed write in the other system.",
    ["system"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
    registry=REGISTRY,
)
BATCH_FALLBACKS = Counter(
    "onefunnel_sync_batch_fallbacks_total",
    "Consumer batches handled again one event per transaction (a poison event, or conflicts after retries).",
    ["reason"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "onefunnel_outbox_backlog", "LeadStageChanged events committed but not yet published.", registry=REGISTRY
)
WRITES_PENDING = Gauge(
    "onefunnel_sync_writes_pending",
    "Write-backs waiting to be made, by system.",
    ["system"],
    registry=REGISTRY,
)
CONSUMER_LAG = pipeline_instruments.consumer_lag(REGISTRY)
DEAD_LETTERS = pipeline_instruments.dead_letters(REGISTRY)

for _outcome in OUTCOMES:
    EVENTS_PROCESSED.labels(_outcome)
for _system in SYSTEMS:
    API_RETRIES.labels(_system)
    WRITE_FAILURES.labels(_system)
    WRITES_PENDING.labels(_system)
    SYNC_LAG.labels(_system)
    for _operation in OPERATIONS:
        API_CALLS.labels(_system, _operation, "ok")
for _reason in ("conflict", "error"):
    BATCH_FALLBACKS.labels(_reason)
CONSUMER_LAG.labels("sync")
for _reason in ("undecodable", "unprocessable"):
    DEAD_LETTERS.labels("sync", _reason)
API_REQUESTS, API_SECONDS = api_instruments(REGISTRY)
