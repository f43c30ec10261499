"""Sync benchmark: events/s one `onefunnel sync` process sustains on PostgreSQL, and its lag at a fixed load.

    .venv/bin/python bench/sync.py --events 20000 --rate 200 --seconds 30

Starts Kafka and PostgreSQL of its own in temporary directories (or uses --bootstrap/--database-url),
serves the HubSpot and Salesforce fakes over HTTP on loopback, and runs ONE `onefunnel sync` process
against them (a fresh one per phase, on fresh topics; the database carries over).

Throughput: the events (leads walking the funnel, see sync_events.py) are published first, then
sync starts and drains them; events/s is counted from sync's own inbox. The backlog topic has one
partition so sync reads it in the order it happened: from several partitions a backlog is read
partition by partition, and sync would see a Salesforce lead's events before the HubSpot events
that made it create that lead, which no real history produces.

Lag: events are published at --rate for --seconds on schedule (open loop, --partitions partitions)
and timed from their occurred_at to sync's handling and to each confirmed write-back.

Prints a table against the targets (1,000 events/s; p99 lag under 2 s at 200 events/s), the
statements sync sent PostgreSQL per event, and stops everything it started, Ctrl-C included.
`--profile cprofile` profiles the sync process (CPU clock) through the backlog instead of the lag, or
through the lag with `--events 0` (the profiler slows sync about 4x: offer a quarter of the rate).
"""

import argparse
import asyncio
import logging
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
from sync_cpu import wait_for_quiet
from sync_events import Walks
from sync_fakes import serve_fakes
from sync_infra import Infra, infrastructure
from sync_measure import counts
from sync_phases import measure_lag, measure_throughput, prepublish
from sync_process import PROFILERS
from sync_profile import summarize
from sync_report import report, statements_table
from sync_stage import Options, stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--events", type=int, default=20000, help="backlog for the throughput phase (0: skip)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="offered events/s in the lag phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the lag phase (0: skip)")
    parser.add_argument("--wave", type=int, default=50, help="leads walking the funnel side by side")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topics")
    parser.add_argument("--api-latency", type=float, default=0.0, help="seconds each fake API call takes")
    parser.add_argument(
        "--api-rate", type=float, default=1000.0, help="sync's client-side calls/s per platform"
    )
    parser.add_argument("--log-level", default="INFO", help="the sync process's ONEFUNNEL_LOG_LEVEL")
    parser.add_argument("--test-durability", action="store_true", help="keep PostgreSQL's fsync=off")
    parser.add_argument(
        "--profile", choices=PROFILERS, help="profile the sync process (the lag phase with --events 0)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a phase after this long")
    parser.add_argument("--quiet", type=float, default=0.3, help="busy cores below which a phase starts")
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="longest wait for a quiet machine")
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    parser.add_argument("--database-url", help="postgresql:// URL of a role that may create databases")
    args = parser.parse_args()
    # A new topic's leader is elected just after it is created; aiokafka retries and says so each time.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    durable = not args.test_durability
    try:
        with infrastructure(
            bootstrap=args.bootstrap, database_url=args.database_url, durable=durable
        ) as infra:
            asyncio.run(run(args, infra))
    except KeyboardInterrupt:
        sys.exit("interrupted; everything the benchmark started is stopped")


async def run(args: argparse.Namespace, infra: Infra) -> None:
    options = Options(
        api_rate=args.api_rate,
        log_level=args.log_level,
        work=Path(tempfile.mkdtemp(prefix="onefunnel-bench-sync-run-")),
    )
    db = await asyncpg.connect(infra.database_url)
    throughput = lag = None
    try:
        async with serve_fakes(latency=args.api_latency) as fakes:
            walks = Walks(hubspot=fakes.hubspot, salesforce=fakes.salesforce, run=uuid.uuid4().hex[:8])
            common = {"infra": infra, "fakes": fakes, "walks": walks, "db": db, "wave": args.wave}
            if args.events:
                # One partition: sync reads the backlog in the order it happened (see the module docstring).
                async with stage("throughput", partitions=1, options=options, **common) as current:
                    backlog = await prepublish(current, events=args.events)
                    await wait_for_quiet(below=args.quiet, within=args.quiet_wait)
                    await current.start_sync(profile=args.profile)
                    throughput = await measure_throughput(current, backlog, within=args.timeout)
                    profile = current.profile_path(args.profile)
            if args.seconds and not (args.profile and args.events):
                async with stage("lag", partitions=args.partitions, options=options, **common) as current:
                    await current.start_sync(profile=args.profile)
                    await wait_for_quiet(below=args.quiet, within=args.quiet_wait)
                    print(f"lag phase: {args.rate:g} events/s for {args.seconds:g} s ...", flush=True)
                    lag = await measure_lag(
                        current, rate=args.rate, seconds=args.seconds, drain_within=args.timeout
                    )
                    profile = current.profile_path(args.profile)
        outcomes = await counts(db, "SELECT outcome, count(*) FROM sync_audit GROUP BY 1 ORDER BY 2 DESC")
        writes = await counts(
            db, "SELECT system || ' ' || status, count(*) FROM sync_write GROUP BY 1 ORDER BY 1"
        )
    finally:
        await db.close()
    report(args, throughput, lag, outcomes=outcomes, writes=writes)
    if throughput is not None and throughput.statements:
        print("\n" + statements_table(throughput))
    profiled = throughput or lag
    if args.profile == "cprofile" and profiled is not None:
        print("\n" + summarize(profile, events=profiled.events))
    if args.profile and profiled is not None:
        print(f"\nprofile: {profile}")
    print(f"sync logs: {options.work}")


if __name__ == "__main__":
    main()
