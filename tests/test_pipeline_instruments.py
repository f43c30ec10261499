"""Every service exposes its process and how long garbage collections stopped it."""

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from onefunnel.shared import pipeline_instruments


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    hooks = list(gc.callbacks)
    registry = CollectorRegistry(auto_describe=True)
    pipeline_instruments.process(registry)
    yield registry
    gc.callbacks[:] = hooks  # the test's hook goes with its registry


def test_each_garbage_collection_is_timed_under_its_oldest_generation(registry: CollectorRegistry) -> None:
    def collections(generation: int) -> float:
        value = registry.get_sample_value("onefunnel_gc_pause_seconds_count", {"generation": str(generation)})
        assert value is not None  # every generation's series exists from the start
        return value

    before = [collections(g) for g in range(3)]
    gc.collect(1)
    gc.collect(2)

    assert [collections(g) - before[g] for g in (1, 2)] == [1.0, 1.0]
    assert (registry.get_sample_value("onefunnel_gc_pause_seconds_sum", {"generation": "2"}) or 0) > 0


def test_the_process_cpu_memory_and_python_version_are_exposed(registry: CollectorRegistry) -> None:
    assert (registry.get_sample_value("process_cpu_seconds_total") or 0) > 0
    assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 0
    samples = [sample for family in registry.collect() for sample in family.samples]
    assert [s.labels["implementation"] for s in samples if s.name == "python_info"] == ["CPython"]
