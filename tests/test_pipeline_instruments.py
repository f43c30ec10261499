"""Every service exposes its process and how long garbage collections stopped it."""

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from onefunnel.shared import pipeline_instruments
from onefunnel.shared.gc_pauses import BUCKETS, PAUSES, GcPauses


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    pipeline_instruments.process(registry)
    return registry


@pytest.fixture
def no_automatic_collections() -> Iterator[None]:
    gc.disable()  # only the collections the test makes
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_automatic_collections")
def test_each_garbage_collection_is_timed_under_its_oldest_generation(registry: CollectorRegistry) -> None:
    def sample(name: str, generation: int, **labels: str) -> float:
        value = registry.get_sample_value(name, {"generation": str(generation), **labels})
        assert value is not None  # every generation's series exists from the start
        return value

    before = [sample("onefunnel_gc_pause_seconds_count", g) for g in range(3)]
    gc.collect(1)
    gc.collect(2)
    gc.collect(2)

    after = [sample("onefunnel_gc_pause_seconds_count", g) for g in range(3)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [0.0, 1.0, 2.0]
    assert sample("onefunnel_gc_pause_seconds_sum", 2) > 0
    assert sample("onefunnel_gc_pause_seconds_bucket", 2, le="+Inf") == after[2]
    assert sample("onefunnel_gc_pause_seconds_bucket", 2, le=str(BUCKETS[0])) <= after[2]


def test_one_hook_times_collections_for_every_registry_of_the_process(registry: CollectorRegistry) -> None:
    other = CollectorRegistry(auto_describe=True)
    pipeline_instruments.process(other)

    owners = [getattr(hook, "__self__", None) for hook in gc.callbacks]
    assert [owner for owner in owners if isinstance(owner, GcPauses)] == [PAUSES]
    count = {"generation": "2"}
    assert registry.get_sample_value("onefunnel_gc_pause_seconds_count", count) == other.get_sample_value(
        "onefunnel_gc_pause_seconds_count", count
    )


def test_the_process_cpu_memory_and_python_version_are_exposed(registry: CollectorRegistry) -> None:
    assert (registry.get_sample_value("process_cpu_seconds_total") or 0) > 0
    assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 0
    samples = [sample for family in registry.collect() for sample in family.samples]
    assert [s.labels["implementation"] for s in samples if s.name == "python_info"] == ["CPython"]
