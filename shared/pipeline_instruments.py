"""Prometheus metrics every service that consumes or parks bus messages exposes under the same names.

Each service has a registry of its own (served at its /metrics); these build the shared metrics on
it, so a dashboard or alert reads `onefunnel_dead_letters_total{service=...}` the same everywhere.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge


def dead_letters(registry: CollectorRegistry) -> Counter:
    return Counter(
        "onefunnel_dead_letters_total",
        "Deliveries or messages parked on the dead-letter topic, by the service that parked them and why.",
        ["service", "reason"],
        registry=registry,
    )


def consumer_lag(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "onefunnel_consumer_lag_messages",
        "Messages on the bus not yet processed by this consumer.",
        ["service"],
        registry=registry,
    )
