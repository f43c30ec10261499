"""What the sync benchmark reads back: progress and per-event, per-write timings from sync's own tables.

Event latency is `sync_inbox.processed_at` (when sync began handling the event, in the transaction
that recorded it) minus the event's `occurred_at`. Write lag is `sync_write.finished_at` minus the
source `occurred_at` it carries: exactly what `onefunnel_sync_lag_seconds` observes, per write.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class Backlog:
    writes_due: int  # pending write-backs due now
    writes_waiting: int  # pending write-backs backing off after a failure
    outbox_unpublished: int


async def backlog(db: asyncpg.Connection) -> Backlog:
    row = await db.fetchrow(
        "/* bench */ SELECT count(*) FILTER (WHERE next_attempt_at <= now()) AS due,"
        " count(*) FILTER (WHERE next_attempt_at > now()) AS waiting,"
        " (SELECT count(*) FROM sync_outbox WHERE published_at IS NULL) AS outbox"
        " FROM sync_write WHERE status = 'pending'"
    )
    assert row is not None
    return Backlog(row["due"], row["waiting"], row["outbox"])


async def handled_span(db: asyncpg.Connection, ids: Sequence[UUID]) -> tuple[int, float]:
    """How many of these events sync recorded, and seconds from its handling the first to the last."""
    row = await db.fetchrow(
        "/* bench */ SELECT count(*) AS n,"
        " extract(epoch FROM max(processed_at) - min(processed_at))::float8 AS span"
        " FROM sync_inbox WHERE event_id = ANY($1::uuid[])",
        list(ids),
    )
    assert row is not None
    return row["n"], row["span"] or 0.0


async def event_latencies(db: asyncpg.Connection, occurred: Mapping[UUID, datetime]) -> list[float]:
    """Seconds from each event's occurred_at until sync handled it."""
    rows = await db.fetch(
        "/* bench */ SELECT event_id, processed_at FROM sync_inbox WHERE event_id = ANY($1::uuid[])",
        list(occurred),
    )
    return [(r["processed_at"] - occurred[r["event_id"]]).total_seconds() for r in rows]


async def write_lags(db: asyncpg.Connection, causes: Sequence[UUID]) -> dict[str, list[float]]:
    """Seconds from the source change to the confirmed write, per system, for writes these events caused."""
    rows = await db.fetch(
        "/* bench */ SELECT system, extract(epoch FROM finished_at - occurred_at)::float8 AS lag"
        " FROM sync_write WHERE status = 'done' AND cause_event_id = ANY($1::uuid[])",
        list(causes),
    )
    lags: dict[str, list[float]] = {}
    for row in rows:
        lags.setdefault(row["system"], []).append(row["lag"])
    return lags


@dataclass(frozen=True)
class Statement:
    calls: int
    total_ms: float  # time PostgreSQL spent executing them
    query: str


async def reset_statements(db: asyncpg.Connection) -> bool:
    """Forget the statement counts so far; False when pg_stat_statements is not loaded."""
    try:
        await db.execute("/* bench */ SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError:
        return False
    return True


async def statements(db: asyncpg.Connection) -> list[Statement]:
    """What sync sent to this database since the reset, most frequent first (the benchmark's own excluded)."""
    rows = await db.fetch(
        "/* bench */ SELECT calls, total_exec_time, query FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND query NOT LIKE '/* bench */%' ORDER BY calls DESC"
    )
    return [Statement(r["calls"], r["total_exec_time"], " ".join(r["query"].split())) for r in rows]


async def counts(db: asyncpg.Connection, sql: str) -> dict[str, int]:
    """`SELECT label, count(*) ...` as a dict."""
    return {str(label): int(n) for label, n in await db.fetch(sql)}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def histogram_quantile(
    before: Mapping[float, float], after: Mapping[float, float], q: float
) -> tuple[float, float]:
    """(lower, upper) bucket bounds holding quantile q of what a Prometheus histogram observed in between.

    `before`/`after` map each bucket's `le` to its cumulative count; buckets cannot say more than that.
    """
    bounds = sorted(after)
    deltas = [after[le] - before.get(le, 0.0) for le in bounds]
    total = deltas[-1] if deltas else 0.0
    if total <= 0:
        return math.nan, math.nan
    rank = q * total
    lower = 0.0
    for le, cumulative in zip(bounds, deltas, strict=True):
        if cumulative >= rank:
            return lower, le
        lower = le
    return lower, math.inf
