"""Benchmark the metrics service on PostgreSQL: counting throughput and GET /v1/funnel latency.

    .venv/bin/python bench/metrics.py --facts 1000000 --count-events 20000

Starts PostgreSQL and a Kafka broker of its own (deploy/), then:
1. bulk-loads `--facts` transitions (COPY, in time order) into metrics_stage_transition as migration
   0003 left it, migrates to head (which derives the funnel's columns and fills its daily rollup) and
   VACUUM ANALYZEs;
2. runs the real `onefunnel metrics` and sends sequential GET /v1/funnel over loopback HTTP for
   typical windows, with and without a campaign filter -> p50/p95 per kind (target p95 < 200 ms);
3. publishes `--count-events` LeadStageChanged (some redelivered) to a fresh topic, starts a fresh
   `onefunnel metrics` on it and polls the facts table until every transition is stored
   -> events/s counted by one process (target 2,000/s).
Everything started is stopped at the end, Ctrl-C included.
"""

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import metrics_data
import metrics_infra

from onefunnel.shared import envelope
from onefunnel.shared.bus import open_bus
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.settings import BusKind, BusSettings, DatabaseSettings

TOKEN = "bench-metrics-token"  # noqa: S105  # a throwaway server's
LATENCY_TARGET_MS = 200.0
RATE_TARGET = 2000.0
KINDS = [
    (f"{days}d{' + campaign' if campaign else ''}", days, campaign)
    for days in (1, 7, 30)
    for campaign in (False, True)
]
CAMPAIGN = "paid-search"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def create_database(server_url: str) -> str:
    name = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        version = await connection.fetchval("SHOW server_version")
        print(f"  postgres {version}", flush=True)
    finally:
        await connection.close()
    database = server_url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(DatabaseSettings(database_url=database))
    # the facts are COPYed in as revision 0003 stored them; migrating them to head derives the rest
    await migrate(engine, service="metrics", revision="0003")
    await engine.dispose()
    return database


async def load_facts(database: str, *, count: int, now: datetime) -> float:
    """COPY `count` facts of the last 60 days, migrate, VACUUM ANALYZE; return the seconds it took.

    The facts go in in time order, as the consumer appends them in production (the generator makes
    them lead by lead), and the table is vacuumed, as autovacuum would have done.
    """
    started = time.perf_counter()
    generated = sorted(
        metrics_data.facts(count=count, seed=1, now=now, days=60), key=lambda fact: fact.occurred_at
    )
    connection = await asyncpg.connect(database)
    try:
        chunk: list[tuple[object, ...]] = []
        loaded = 0
        for fact in generated:
            chunk.append(metrics_data.record(fact))
            if len(chunk) == 100_000 or loaded + len(chunk) == count:
                await connection.copy_records_to_table(
                    "metrics_stage_transition", records=chunk, columns=metrics_data.COLUMNS
                )
                loaded += len(chunk)
                chunk = []
                print(f"  loaded {loaded:>9,} facts  {time.perf_counter() - started:6.1f} s", flush=True)
        copied = time.perf_counter()
        engine = create_engine(DatabaseSettings(database_url=database))
        try:
            await migrate(engine, service="metrics")
        finally:
            await engine.dispose()
        print(
            f"  migrated to head (derived columns, rollup) in {time.perf_counter() - copied:.1f} s",
            flush=True,
        )
        await connection.execute("VACUUM ANALYZE")
        leads = await connection.fetchval("SELECT count(DISTINCT lead_id) FROM metrics_stage_transition")
        print(f"  {leads:,} leads; analyzed  {time.perf_counter() - started:6.1f} s", flush=True)
    finally:
        await connection.close()
    return time.perf_counter() - started


async def measure_latency(base: str, *, now: datetime, requests: int) -> dict[str, list[float]]:
    """Sequential GET /v1/funnel, kinds in rotation; milliseconds per kind (after one warm-up each)."""
    timings: dict[str, list[float]] = {name: [] for name, _, _ in KINDS}
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as client:
        for round_ in range(requests + 1):
            for name, days, campaign in KINDS:
                params = {"from": (now - timedelta(days=days)).isoformat(), "to": now.isoformat()}
                if campaign:
                    params["campaign"] = CAMPAIGN
                started = time.perf_counter()
                response = await client.get("/v1/funnel", params=params)
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if round_ > 0:  # round 0 warms the connection pool and the caches
                    timings[name].append(elapsed)
            if round_ % 10 == 0:
                print(f"  round {round_:>3}/{requests}  load {load()}", flush=True)
    return timings


async def publish(bootstrap: str, topic: str, *, count: int, duplicates: float) -> int:
    """Publish the counting events; return how many distinct transitions they hold."""
    events, distinct = metrics_data.events(count=count, seed=2, duplicates=duplicates)
    settings = BusSettings(bus=BusKind.KAFKA, kafka_bootstrap_servers=bootstrap, kafka_partitions=6)
    started = time.perf_counter()
    async with open_bus(settings, topics=[topic]) as bus:
        for i in range(0, len(events), 1000):
            await bus.publish(topic, [envelope.encode(e, source="/bench") for e in events[i : i + 1000]])
    print(
        f"  published {len(events):,} events ({distinct:,} distinct)"
        f" in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return distinct


def consumed(exposition: str) -> int:
    """new + duplicate events the consumer has committed, from its Prometheus exposition."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("onefunnel_metrics_events_consumed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def wait_counted(base: str, *, expected: int, seconds: float) -> dict[str, float]:
    """Poll the consumer's counters until `expected` events are committed; time the first and last.

    The counters rise right after each batch's facts commit, so they are a cheap stand-in for
    counting the facts table (checked once at the end).
    """
    started = time.perf_counter()
    first_at, first_count, count, last_print = None, 0, 0, started
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        while time.perf_counter() < started + seconds:
            count = consumed((await client.get("/metrics")).text)
            now = time.perf_counter()
            if first_at is None and count > 0:
                first_at, first_count = now, count
            if count >= expected:
                break
            if now - last_print > 5:
                print(f"  consumed {count:>7,}/{expected:,}  load {load()}", flush=True)
                last_print = now
            await asyncio.sleep(0.1)
    end = time.perf_counter()
    return {"consumed": count, "end": end, "first_at": first_at or end, "first_count": first_count}


async def stored_facts(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM metrics_stage_transition"))
    finally:
        await connection.close()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def run(args: argparse.Namespace, server_url: str, bootstrap: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    database = await create_database(server_url)
    print(f"[1/3] loading {args.facts:,} facts  (load {load()})", flush=True)
    load_seconds = await load_facts(database, count=args.facts, now=now)
    topic = f"bench-stage-changes-{uuid.uuid4().hex[:8]}"
    distinct = await publish(bootstrap, topic, count=args.count_events, duplicates=args.duplicates)

    print(f"[2/3] GET /v1/funnel x {args.requests} per kind  (load {load()})", flush=True)
    with metrics_infra.metrics_service(
        database_url=database, bootstrap=bootstrap, topic=f"{topic}-idle", token=TOKEN
    ) as base:
        latency_load = load()
        timings = await measure_latency(base, now=now, requests=args.requests)

    # The counting runs against the loaded table: its per-event lookups see a realistic index.
    print(f"[3/3] counting {args.count_events:,} events  (load {load()})", flush=True)
    started = time.perf_counter()
    with metrics_infra.metrics_service(
        database_url=database, bootstrap=bootstrap, topic=topic, token=TOKEN
    ) as base:
        ready = time.perf_counter() - started
        counting_load = load()
        counted = await wait_counted(base, expected=args.count_events, seconds=args.count_timeout)
    stored = await stored_facts(database) - args.facts
    span = max(counted["end"] - counted["first_at"], 1e-9)
    steady = (counted["consumed"] - counted["first_count"]) / span
    overall = counted["consumed"] / (counted["end"] - started)

    print()
    print(f"python {platform.python_version()}, nproc {os.cpu_count()}, loadavg now {load()}")
    print(f"facts {args.facts:,} loaded in {load_seconds:.1f} s; latency phase load {latency_load}")
    print(
        f"{'GET /v1/funnel window':<24}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"
        "  target p95 < 200 ms"
    )
    worst = 0.0
    for name, values in timings.items():
        p50, p95 = percentile(values, 50), percentile(values, 95)
        worst = max(worst, p95)
        verdict = "PASS" if p95 < LATENCY_TARGET_MS else "FAIL"
        print(f"{name:<24}{len(values):>5}{p50:>10.1f}{p95:>10.1f}{max(values):>10.1f}  {verdict}")
    print(
        f"counting (load {counting_load}): {counted['consumed']:,}/{args.count_events:,} events consumed, "
        f"{stored:,}/{distinct:,} distinct facts stored; process ready after {ready:.1f} s"
    )
    print(f"  steady (first fact -> last): {steady:,.0f} events/s consumed")
    print(f"  overall (process start -> last, incl. start-up and group join): {overall:,.0f} events/s")
    rate_verdict = "PASS" if steady >= RATE_TARGET and stored == distinct else "FAIL"
    print(
        f"TARGET p95 < 200 ms (worst kind {worst:.0f} ms): {'PASS' if worst < LATENCY_TARGET_MS else 'FAIL'}"
    )
    print(f"TARGET counting >= 2,000 events/s (steady {steady:,.0f}): {rate_verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--facts", type=int, default=1_000_000, help="Facts bulk-loaded for the latency phase."
    )
    parser.add_argument("--requests", type=int, default=30, help="GET /v1/funnel per window kind (6 kinds).")
    parser.add_argument("--count-events", type=int, default=20_000, help="LeadStageChanged published.")
    parser.add_argument("--duplicates", type=float, default=0.05, help="Share of events redelivered.")
    parser.add_argument("--count-timeout", type=float, default=600, help="Give up counting after this (s).")
    args = parser.parse_args()
    print(f"nproc {os.cpu_count()}, python {platform.python_version()}, load {load()}", flush=True)
    with metrics_infra.postgres() as server_url, metrics_infra.kafka() as bootstrap:
        asyncio.run(run(args, server_url, bootstrap))


if __name__ == "__main__":
    main()
