"""The two measurements: a pre-published backlog drained as fast as one process can, and an open-loop
offered load at a fixed rate with its lag.

Progress is what the process consumed (`onefunnel_sync_events_total`, every outcome, dead letters
included), so an event that never reaches the inbox cannot stall a phase.
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sync_cpu import Cpu, CpuMark, cpu_mark, cpu_since
from sync_events import STEPS
from sync_measure import (
    Backlog,
    Statement,
    backlog,
    event_latencies,
    handled_span,
    percentile,
    reset_statements,
    statements,
    write_lags,
)
from sync_process import SyncProcess
from sync_stage import Stage

from onefunnel.shared import envelope
from onefunnel.shared.events import SourceEvent

CE_SOURCE = "/onefunnel/ingest"  # what ingest stamps on the source events it publishes
POLL = 1.0  # seconds between looks at the sync process: each /metrics scrape costs it ~10 ms of CPU
Samples = dict[str, list[tuple[dict[str, str], float]]]


def _sync(stage: Stage) -> SyncProcess:
    assert stage.sync is not None, "start the sync process first"
    return stage.sync


def _cpu_mark(stage: Stage) -> CpuMark:
    return cpu_mark(
        sync_pid=_sync(stage).pid, postgres_dir=stage.infra.postgres_dir, kafka_pid=stage.infra.kafka_pid
    )


def _cpu_since(stage: Stage, start: CpuMark) -> Cpu:
    return cpu_since(start, _cpu_mark(stage))


def consumed(samples: Samples) -> int:
    """Messages the process has consumed, whatever became of them."""
    return int(sum(value for _, value in samples.get("onefunnel_sync_events_total", [])))


@dataclass(frozen=True)
class Throughput:
    events: int
    handled: int  # of them in the inbox (the rest were dead-lettered)
    wall_seconds: float  # from ready until every event was consumed
    span_seconds: float  # from handling the first to handling the last
    drained_seconds: float  # from ready until the write-backs due and the outbox were done too
    cpu: Cpu
    samples: Samples
    statements: list[Statement]  # what sync sent PostgreSQL meanwhile (empty without pg_stat_statements)

    @property
    def events_per_second(self) -> float:
        return (self.handled - 1) / self.span_seconds if self.span_seconds else 0.0


@dataclass(frozen=True)
class Lag:
    offered_rate: float
    seconds: float
    events: int
    publish_late_p99: float  # how far behind schedule the load generator published
    event_latencies: list[float]
    write_lags: dict[str, list[float]]
    backlog_after: Backlog
    cpu: Cpu
    samples: Samples


def _events(stage: Stage, people: int, *, start: datetime, every: timedelta) -> list[SourceEvent]:
    made = stage.walks.people(people)
    order = stage.walks.in_waves(made, wave=stage.wave)
    return [stage.walks.event(person, step, at=start + i * every) for i, (person, step) in enumerate(order)]


async def _publish(stage: Stage, events: Sequence[SourceEvent]) -> None:
    await stage.bus.publish(stage.topic, [envelope.encode(e, source=CE_SOURCE) for e in events])


async def prepublish(stage: Stage, *, events: int) -> list[SourceEvent]:
    """Publish the throughput backlog before sync starts: `events` rounded to whole walks."""
    people = max(1, events // STEPS)
    print(f"publishing the backlog: {people} leads x {STEPS} events ...", flush=True)
    start = datetime.now(UTC) - timedelta(hours=2)
    made = _events(stage, people, start=start, every=timedelta(milliseconds=10))
    for first in range(0, len(made), 1000):
        await _publish(stage, made[first : first + 1000])
    return made


async def _drain(stage: Stage, *, expect: int, within: float, label: str) -> tuple[Backlog, Samples]:
    """Poll until `expect` messages were consumed and no write-back is due nor outbox row waits."""
    deadline, last_count, last_at = time.monotonic() + within, None, time.monotonic()
    while True:
        samples, state = await _sync(stage).metrics(), await backlog(stage.db)
        count, now = consumed(samples), time.monotonic()
        if last_count is None:
            last_count = count
        elif now - last_at >= 5.0:
            rate = (count - last_count) / (now - last_at)
            writes = f"write-backs due {state.writes_due:>5}, backing off {state.writes_waiting:>3}"
            print(
                f"  {label}: consumed {count:>6}/{expect} ({rate:5.0f}/s)  {writes}  "
                f"outbox {state.outbox_unpublished:>5}",
                flush=True,
            )
            last_count, last_at = count, now
        if (count >= expect and not state.writes_due and not state.outbox_unpublished) or now >= deadline:
            return state, samples
        await asyncio.sleep(POLL)


async def measure_throughput(stage: Stage, backlog_events: list[SourceEvent], *, within: float) -> Throughput:
    """Time the sync process through the backlog published before it started."""
    counting = await reset_statements(stage.db)
    start, mark = time.monotonic(), _cpu_mark(stage)
    deadline, expect = start + within, len(backlog_events)
    count, last_count, last_at = 0, 0, start
    while count < expect and time.monotonic() < deadline:
        await asyncio.sleep(POLL)  # polling another process: there is no event to wait on
        count, now = consumed(await _sync(stage).metrics()), time.monotonic()
        if now - last_at >= 5.0:
            rate = (count - last_count) / (now - last_at)
            print(f"  backlog: consumed {count:>6}/{expect} ({rate:5.0f}/s)", flush=True)
            last_count, last_at = count, now
    wall, cpu = time.monotonic() - start, _cpu_since(stage, mark)
    sent = await statements(stage.db) if counting else []
    state, samples = await _drain(stage, expect=expect, within=deadline - time.monotonic(), label="backlog")
    if consumed(samples) < expect or state.writes_due or state.outbox_unpublished:
        raise SystemExit(f"the backlog was not drained within {within:.0f} s: {state}")
    handled, span = await handled_span(stage.db, [e.id for e in backlog_events])
    return Throughput(expect, handled, wall, span, time.monotonic() - start, cpu, samples, sent)


async def measure_lag(stage: Stage, *, rate: float, seconds: float, drain_within: float) -> Lag:
    """Publish at `rate` events/s for `seconds` (open loop: on schedule, whatever sync does), then drain."""
    people = max(1, round(rate * seconds / STEPS))
    wall_start = datetime.now(UTC) + timedelta(seconds=2)  # making the events takes a moment
    events = _events(stage, people, start=wall_start, every=timedelta(seconds=1 / rate))
    mark, late = _cpu_mark(stage), list[float]()
    start = time.monotonic() + (wall_start - datetime.now(UTC)).total_seconds()
    sent, next_print = 0, start
    while sent < len(events):
        now = time.monotonic()
        due = min(len(events), int((now - start) * rate) + 1) if now >= start else 0
        if due > sent:
            await _publish(stage, events[sent:due])
            acked = time.monotonic()
            late.extend(acked - (start + i / rate) for i in range(sent, due))
            sent = due
        if now >= next_print:
            print(f"  offered {sent:>6}/{len(events)} events at {rate:g}/s", flush=True)
            next_print += 5.0
        await asyncio.sleep(0.005)
    cpu = _cpu_since(stage, mark)
    after, samples = await _drain(stage, expect=len(events), within=drain_within, label="lag")
    return Lag(
        offered_rate=rate,
        seconds=seconds,
        events=len(events),
        publish_late_p99=percentile(late, 99),
        event_latencies=await event_latencies(stage.db, {e.id: e.occurred_at for e in events}),
        write_lags=await write_lags(stage.db, [e.id for e in events]),
        backlog_after=after,
        cpu=cpu,
        samples=samples,
    )
