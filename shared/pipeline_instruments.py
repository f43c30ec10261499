"""Prometheus metrics every service exposes under the same names: its process, and the bus messages it
consumes or parks.

Each service has a registry of its own (served at its /metrics); these build the shared metrics on
it, so a dashboard or alert reads `onefunnel_dead_letters_total{service=...}` the same everywhere.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, PlatformCollector, ProcessCollector

from onefunnel.shared import gc_pauses


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


def process(registry: CollectorRegistry) -> None:
    """The process's CPU, memory and file descriptors (`process_*`), its Python (`python_info`), and how
    long each garbage collection stopped it (`onefunnel_gc_pause_seconds{generation}`, gc_pauses.py)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    gc_pauses.PAUSES.install()
    registry.register(gc_pauses.PAUSES)
