"""The sync benchmark's final table: figures against the targets, and what sync asked PostgreSQL."""

import argparse
import math

from sync_measure import histogram_quantile, percentile
from sync_phases import Lag, Samples, Throughput

THROUGHPUT_TARGET = 1000.0  # events/s per process
LAG_TARGET, LAG_TARGET_RATE = 2.0, 200.0  # p99 seconds at events/s
DISTURBED = 0.3  # cores busy with other work during a phase that make its figures suspect


def _lag_buckets(samples: Samples) -> dict[float, float]:
    """onefunnel_sync_lag_seconds buckets summed over systems: le -> cumulative count."""
    buckets: dict[float, float] = {}
    for labels, value in samples.get("onefunnel_sync_lag_seconds_bucket", []):
        le = float(labels["le"])
        buckets[le] = buckets.get(le, 0.0) + value
    return buckets


def statements_table(throughput: Throughput, *, top: int = 30) -> str:
    """What sync asked PostgreSQL per event while it drained the backlog, most frequent first."""
    sent, events = throughput.statements, throughput.events
    calls, server_ms = sum(s.calls for s in sent), sum(s.total_ms for s in sent)
    lines = [
        f"PostgreSQL statements while draining the backlog: {calls / events:.1f} per event"
        f" (an executemany counts once per row; asyncpg sends its rows in one round trip),"
        f" {server_ms / events:.2f} ms/event executing them",
        f"{'calls/event':>11} {'ms/call':>8}  statement",
    ]
    for statement in sent[:top]:
        per_call = statement.total_ms / max(statement.calls, 1)
        lines.append(f"{statement.calls / events:11.2f} {per_call:8.3f}  {statement.query[:110]}")
    return "\n".join(lines)


def _seconds(values: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.3f}" for x in values)


def _verdict(value: float, target: float, *, at_least: bool) -> tuple[str, str]:
    if math.isnan(value):
        return "-", "n/a"
    ratio = value / target
    passed = value >= target if at_least else value < target
    return f"{ratio:.2f}x", "PASS" if passed else "FAIL"


def report(
    args: argparse.Namespace,
    throughput: Throughput | None,
    lag: Lag | None,
    *,
    outcomes: dict[str, int],
    writes: dict[str, int],
) -> None:
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, value: str, target: str = "", verdict: tuple[str, str] = ("", "")) -> None:
        rows.append((name, value, target, *verdict))

    if throughput is not None:
        t = throughput
        verdict = _verdict(t.events_per_second, THROUGHPUT_TARGET, at_least=True)
        row("throughput, events/s (first to last handled)", f"{t.events_per_second:.0f}", ">= 1000", verdict)
        row("  events / s from ready to all handled", f"{t.events / t.wall_seconds:.0f}")
        row("  events / s until writes + outbox drained", f"{t.events / t.drained_seconds:.0f}")
        for part in ("sync", "postgres", "kafka", "bench", "other"):
            seconds = getattr(t.cpu, part)
            busy = f"{1000 * seconds / t.events:.2f} ({seconds / t.cpu.wall:.2f})"
            row(f"  CPU {part}, ms/event (cores busy)", busy)
    if lag is not None:
        everything = [x for values in lag.write_lags.values() for x in values]
        at = f"@ {lag.offered_rate:g}/s"
        p99 = percentile(everything, 99)
        ratio, result = _verdict(p99, LAG_TARGET, at_least=False)
        if lag.offered_rate < LAG_TARGET_RATE:
            result += f" (below {LAG_TARGET_RATE:g}/s)"
        row(f"write lag p99, s {at} (occurred -> written)", f"{p99:.3f}", "< 2", (ratio, result))
        row(f"write lag p50, s {at}", f"{percentile(everything, 50):.3f}")
        for system, values in sorted(lag.write_lags.items()):
            per_system = (percentile(values, 50), percentile(values, 99), max(values))
            row(f"  {system}: writes, p50 / p99 / max", f"{len(values)}, " + _seconds(per_system))
        low, high = histogram_quantile({}, _lag_buckets(lag.samples), 0.99)
        row("  p99 from onefunnel_sync_lag_seconds buckets", f"{low:g} .. {high:g}")
        e = lag.event_latencies
        handled = (percentile(e, 50), percentile(e, 99), max(e, default=math.nan))
        row(f"event handled p50 / p99 / max, s {at}", _seconds(handled))
        row("  events offered, handled", f"{lag.events}, {len(e)}")
        row("  load generator behind schedule p99, s", f"{lag.publish_late_p99:.3f}")
        row("  write-backs backing off after the drain", f"{lag.backlog_after.writes_waiting}")
        for part in ("sync", "postgres", "kafka", "bench", "other"):
            row(f"  CPU {part}, cores busy", f"{getattr(lag.cpu, part) / lag.cpu.wall:.2f}")
    width = max((len(r[0]) for r in rows), default=40)
    print(f"\n{'measure':<{width}}  {'value':>26}  {'target':>8}  {'ratio':>6}  result")
    for name, value, target, ratio, result in rows:
        print(f"{name:<{width}}  {value:>26}  {target:>8}  {ratio:>6}  {result}")
    print("\noutcomes (sync_audit): " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    print("write-backs (sync_write): " + ", ".join(f"{k} {v}" for k, v in writes.items()))
    dead = sum(
        v
        for phase in (throughput, lag)
        if phase is not None
        for _, v in phase.samples.get("onefunnel_dead_letters_total", [])
    )
    fallbacks = {
        name: sum(v for _, v in phase.samples.get("onefunnel_sync_batch_fallbacks_total", []))
        for name, phase in (("throughput", throughput), ("lag", lag))
        if phase is not None
    }
    print(
        "consumer batches handled again one event at a time: "
        + ", ".join(f"{name} {count:.0f}" for name, count in fallbacks.items())
    )
    print(f"dead letters: {dead:.0f}; sync's client limit {args.api_rate:g} calls/s per platform; ", end="")
    print(f"fake API latency {args.api_latency:g} s; PostgreSQL durable: {not args.test_durability}")
    for name, phase in (("throughput", throughput), ("lag", lag)):
        if phase is not None and phase.cpu.other / phase.cpu.wall > DISTURBED:
            others = phase.cpu.other / phase.cpu.wall
            print(f"DISTURBED: other processes kept {others:.2f} cores busy during the {name} phase")
