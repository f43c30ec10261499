"""CPU accounting from /proc: what each part of the benchmark used during a phase, and what else ran.

The machine is shared; CPU seconds per event of the sync process hold up under other load better
than events/s do, and the `other` column says how much the figures were disturbed.
"""

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used during a phase by each part, and by everything else on the machine."""

    wall: float
    sync: float
    postgres: float
    kafka: float
    bench: float
    other: float


@dataclass
class CpuMark:
    at: float = field(default_factory=time.monotonic)
    sync: float = 0.0
    postgres: dict[int, float] = field(default_factory=dict)
    kafka: float = 0.0
    bench: float = 0.0
    machine: float = 0.0


def cpu_mark(*, sync_pid: int, postgres_dir: Path | None, kafka_pid: int | None) -> CpuMark:
    """CPU seconds used so far by sync, PostgreSQL (when started here), Kafka, this process, the machine."""
    return CpuMark(
        sync=cpu_seconds([sync_pid]),
        postgres={pid: cpu_seconds([pid]) for pid in (postgres_pids(postgres_dir) if postgres_dir else [])},
        kafka=cpu_seconds([kafka_pid]) if kafka_pid else 0.0,
        bench=cpu_seconds([os.getpid()]),
        machine=machine_busy(),
    )


def cpu_since(start: CpuMark, end: CpuMark) -> Cpu:
    """What each part used between two marks (a PostgreSQL backend started meanwhile counts whole)."""
    postgres = sum(v - start.postgres.get(pid, 0.0) for pid, v in end.postgres.items())
    parts = (end.sync - start.sync, postgres, end.kafka - start.kafka, end.bench - start.bench)
    other = max(0.0, end.machine - start.machine - sum(parts))
    return Cpu(end.at - start.at, *parts, other)


async def wait_for_quiet(*, below: float, within: float) -> float:
    """Wait until the machine's busy cores (over one second) fall below `below`, at most `within` s.

    On a shared machine, other work would be measured as ours. Returns the last reading.
    """
    deadline = time.monotonic() + within
    while True:
        before = machine_busy()
        await asyncio.sleep(1.0)
        busy = machine_busy() - before
        if busy < below or time.monotonic() >= deadline:
            print(f"  machine: {busy:.2f} cores busy before the phase", flush=True)
            return busy


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU seconds these processes have used so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def postgres_pids(directory: Path) -> list[int]:
    """The postmaster of the server in `directory` and its children (backends, WAL writer, ...)."""
    postmaster = int((directory / "data/postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError):
            continue
        if parent == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _TICKS
