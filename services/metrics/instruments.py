"""The metrics service's Prometheus metrics, on a registry of its own (served at its /metrics).

Labels are bounded: stages and systems are enums; campaigns are an allow-list, the rest `other`.
Counters count each transition once per process (facts are deduplicated before they are counted);
use rate()/increase(), which handle restarts. Exact numbers come from the BI API, never from here.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from onefunnel.shared import pipeline_instruments
from onefunnel.shared.api_requests import api_instruments
from onefunnel.shared.events import SourceSystem
from onefunnel.shared.stages import Stage

REGISTRY = CollectorRegistry(auto_describe=True)
pipeline_instruments.process(REGISTRY)

NO_STAGE = "none"  # from_stage of a lead entering the funnel
OTHER_CAMPAIGN = "other"
HOUR, DAY = 3600.0, 86400.0

TRANSITIONS = Counter(
    "onefunnel_stage_transitions_total",
    "Canonical stage transitions, by the stage left and the stage entered.",
    ["from_stage", "to_stage"],
    registry=REGISTRY,
)
ENTRIES = Counter(
    "onefunnel_stage_entries_total",
    "Leads entering a stage, by the system whose change moved them.",
    ["stage", "source_system"],
    registry=REGISTRY,
)
CAMPAIGN_ENTRIES = Counter(
    "onefunnel_campaign_stage_entries_total",
    "Leads entering a stage, by campaign (ONEFUNNEL_METRICS_CAMPAIGNS; any other campaign is `other`).",
    ["campaign", "stage"],
    registry=REGISTRY,
)
TIME_IN_STAGE = Histogram(
    "onefunnel_time_in_stage_seconds",
    "How long leads stayed in a stage before leaving it.",
    ["stage"],
    buckets=(
        60,
        300,
        900,
        HOUR,
        4 * HOUR,
        12 * HOUR,
        DAY,
        3 * DAY,
        7 * DAY,
        14 * DAY,
        30 * DAY,
        60 * DAY,
        90 * DAY,
        180 * DAY,
    ),
    registry=REGISTRY,
)
LEADS_IN_STAGE = Gauge(
    "onefunnel_leads_in_stage",
    "Leads whose current stage this is (from the facts).",
    ["stage"],
    registry=REGISTRY,
)
CONSUMED = Counter(
    "onefunnel_metrics_events_consumed_total",
    "LeadStageChanged messages consumed, by whether they were new or a redelivery.",
    ["result"],
    registry=REGISTRY,
)
PROCESSING_LATENCY = Histogram(
    "onefunnel_metrics_processing_latency_seconds",
    "From a transition's occurred_at to it being counted here.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
    registry=REGISTRY,
)
CONSUMER_LAG = pipeline_instruments.consumer_lag(REGISTRY)
DEAD_LETTERS = pipeline_instruments.dead_letters(REGISTRY)

_STAGES = [str(s) for s in Stage]
for _to in _STAGES:
    for _from in [NO_STAGE, *_STAGES]:
        if _from != _to:
            TRANSITIONS.labels(_from, _to)
    for _system in SourceSystem:
        ENTRIES.labels(_to, _system)
    TIME_IN_STAGE.labels(_to)
    LEADS_IN_STAGE.labels(_to)
for _result in ("new", "duplicate"):
    CONSUMED.labels(_result)
CONSUMER_LAG.labels("metrics")
for _reason in ("undecodable", "unprocessable"):
    DEAD_LETTERS.labels("metrics", _reason)

SLA_BREACHES = Counter(
    "onefunnel_sla_breaches_total",
    "Leads that stayed in a stage longer than the funnel's SLA allows (each stay counted once).",
    ["stage"],
    registry=REGISTRY,
)
LEADS_IN_SLA_BREACH = Gauge(
    "onefunnel_leads_in_sla_breach",
    "Leads in breach of the stage's SLA right now.",
    ["stage"],
    registry=REGISTRY,
)
for _stage in _STAGES:
    SLA_BREACHES.labels(_stage)
    LEADS_IN_SLA_BREACH.labels(_stage)
API_REQUESTS, API_SECONDS = api_instruments(REGISTRY)
