"""How long each garbage collection stopped the process: `onefunnel_gc_pause_seconds{generation}`.

One gc.callbacks hook per process, however many services (registries) it serves. The hook only adds
to plain lists: it runs inside the collector, where taking a lock that the interrupted code may hold
(prometheus_client's metrics take one) could deadlock. Each registry reads the lists when scraped.
"""

import bisect
import gc
import time
from collections.abc import Iterator

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GENERATIONS = 3


class GcPauses(Collector):
    """Times collections once installed (`install`); collected as a histogram by every registry it is in."""

    def __init__(self) -> None:
        self._counts = [[0] * (len(BUCKETS) + 1) for _ in range(GENERATIONS)]  # per bucket, +Inf last
        self._sums = [0.0] * GENERATIONS
        self._started = 0.0  # collections never nest: one start time is enough

    def install(self) -> None:
        if self._hook not in gc.callbacks:
            gc.callbacks.append(self._hook)

    def _hook(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = info["generation"]
        self._counts[generation][bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sums[generation] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "onefunnel_gc_pause_seconds",
            "Garbage collections and how long each stopped the process, by the oldest generation collected.",
            labels=["generation"],
        )
        for generation in range(GENERATIONS):
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], self._counts[generation], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family


PAUSES = GcPauses()
