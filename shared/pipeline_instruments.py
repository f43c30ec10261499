"""Prometheus metrics every service exposes under the same names: its process, and the bus messages it
consumes or parks.

Each service has a registry of its own (served at its /metrics); these build the shared metrics on
it, so a dashboard or alert reads `onefunnel_dead_letters_total{service=...}` the same everywhere.
"""

import gc
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)


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
    long each garbage collection stopped it (`onefunnel_gc_pause_seconds{generation}`)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    pauses = Histogram(
        "onefunnel_gc_pause_seconds",
        "Garbage collections and how long each stopped the process, by the oldest generation collected.",
        ["generation"],
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        registry=registry,
    )
    gc.callbacks.append(_GcPauses([pauses.labels(str(generation)) for generation in range(3)]))


class _GcPauses:
    """A gc.callbacks hook timing each collection. Collections never nest, so one start time is enough."""

    def __init__(self, by_generation: list[Any]) -> None:
        self._by_generation = by_generation
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)
