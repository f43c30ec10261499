"""Ingest benchmark: HubSpot-signed deliveries through `onefunnel ingest` to a real Kafka broker.

    .venv/bin/python bench/ingest.py --seconds 10

Starts a broker of its own (deploy/kafka/kafka.sh; or uses --bootstrap), then, on loopback, the ceiling app
(ingest's route answering without verifying or publishing: the framework's ceiling), the real `onefunnel
ingest`, and a bare aiokafka producer publishing the same messages (the broker client's ceiling). For
deliveries of 1 and of 50 events it measures each one's maximum rate (closed loop), back to back, then the
latency at half that rate (open loop), checks that the topic holds every event ingest acknowledged, prints a
table and the targets, and stops everything it started, Ctrl-C included. `--rounds 3` measures it all three
times and judges on the median ratio. See bench/README.md.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ingest_phases import Phases
from ingest_processes import Processes
from ingest_report import print_table, print_targets
from ingest_servers import (
    STACKS,
    event_loop,
    serve_bare_route,
    serve_ceiling,
    serve_ingest,
    serve_publish_path,
)

REPO = Path(__file__).resolve().parent.parent
_NEEDS = {"plain": (), "httptools": ("httptools",), "uvloop": ("httptools", "uvloop")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each phase")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (and batches)")
    parser.add_argument("--batches", default="1,50", help="events per delivery, comma separated")
    parser.add_argument("--stacks", default="plain,uvloop", help=", ".join(STACKS) + " (ingest_servers.py)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topics")
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--retries", type=int, default=2, help="measure a disturbed phase again")
    parser.add_argument(
        "--patience", type=float, default=300.0, help="seconds the whole run may spend on those two"
    )
    parser.add_argument(
        "--publish-path",
        action="store_true",
        help="also measure ingest with free normalization and encoding (ingest_servers.py)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every server this many times and judge each target on the median"
        " of the rounds' side-by-side ratios",
    )
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument(
        "--profile", action="store_true", help="instead: profile ingest under load (pip install pyinstrument)"
    )
    internal = parser.add_subparsers(dest="command", help=argparse.SUPPRESS)
    bare_route = internal.add_parser("serve-bare-route")
    bare_route.add_argument("--stack", required=True)
    bare_route.add_argument("--port", type=int, required=True)
    internal.add_parser("serve-ceiling").add_argument("--stack", required=True)
    internal.add_parser("serve-publish-path").add_argument("--stack", required=True)
    ingest_parser = internal.add_parser("serve-ingest")
    ingest_parser.add_argument("--stack", required=True)
    ingest_parser.add_argument("--profile-to", type=Path, help="record a pyinstrument session into this file")
    load, produce = internal.add_parser("load"), internal.add_parser("produce")
    for sub in (load, produce):
        sub.add_argument("--batch", type=int, required=True)
        sub.add_argument("--connections", type=int, required=True)
        sub.add_argument("--warmup", type=float, required=True)
        sub.add_argument("--seconds", type=float, required=True)
        sub.add_argument("--first-event-id", type=int, required=True)
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--rate", type=float, help="open loop at this many requests/s (default: closed)")
    produce.add_argument("--bootstrap", required=True)
    produce.add_argument("--topic", required=True)
    produce.add_argument("--partitions", type=int, required=True)
    produce.add_argument("--loop", choices=("asyncio", "uvloop"), required=True)
    args = parser.parse_args()

    if args.command == "serve-bare-route":
        serve_bare_route(stack=args.stack, port=args.port)
    elif args.command == "serve-ceiling":
        serve_ceiling(stack=args.stack)
    elif args.command == "serve-publish-path":
        serve_publish_path(stack=args.stack)
    elif args.command == "serve-ingest" and args.profile_to:
        import ingest_profile

        ingest_profile.serve_profiled(stack=args.stack, out=args.profile_to)
    elif args.command == "serve-ingest":
        serve_ingest(stack=args.stack)
    elif args.command == "load":
        _load(args)
    elif args.command == "produce":
        _produce(args)
    else:
        _benchmark(args)


def _load(args: argparse.Namespace) -> None:
    """Drive one server; print the summary as one JSON line. The load generator is not under test:
    it gets uvloop when installed."""
    import ingest_load
    from ingest_deliveries import Deliveries

    deliveries = Deliveries(
        batch=args.batch,
        public_base_url=f"http://127.0.0.1:{args.port}",
        host=f"127.0.0.1:{args.port}",
        first_event_id=args.first_event_id,
    )
    address = {"host": "127.0.0.1", "port": args.port, "connections": args.connections}
    timing = {"warmup": args.warmup, "seconds": args.seconds}
    with asyncio.Runner(loop_factory=_uvloop_if_installed()) as runner:
        if args.rate:
            run = ingest_load.open_loop(**address, **timing, make=deliveries.request, rate=args.rate)
        else:
            run = ingest_load.closed_loop(**address, **timing, make=deliveries.request)
        samples = runner.run(run)
    print(json.dumps(ingest_load.summary(samples, batch=args.batch)))


def _produce(args: argparse.Namespace) -> None:
    import ingest_producer

    loop_factory = _uvloop_if_installed() if args.loop == "uvloop" else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(
            ingest_producer.run(
                bootstrap=args.bootstrap,
                topic=args.topic,
                partitions=args.partitions,
                batch=args.batch,
                concurrency=args.connections,
                warmup=args.warmup,
                seconds=args.seconds,
                first_event_id=args.first_event_id,
            )
        )
    print(json.dumps(result))


def _uvloop_if_installed() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _benchmark(args: argparse.Namespace) -> None:
    stacks = []
    for stack in (s.strip() for s in args.stacks.split(",") if s.strip()):
        if stack not in STACKS:
            raise SystemExit(f"unknown stack {stack!r}; one of {', '.join(STACKS)}")
        missing = [name for name in _NEEDS[stack] if importlib.util.find_spec(name) is None]
        if missing:
            print(f"skipping the {stack} stack: {', '.join(missing)} not installed")
        else:
            stacks.append(stack)
    batches = [int(b) for b in args.batches.split(",")]
    if args.profile and importlib.util.find_spec("pyinstrument") is None:
        raise SystemExit("--profile needs pyinstrument: .venv/bin/pip install pyinstrument")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, even into a file
    # SIGTERM unwinds like Ctrl-C, so the with block below stops what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="onefunnel-bench-"))
    try:
        with Processes(work) as processes:
            bootstrap, broker_pid = args.bootstrap, None
            if bootstrap is None:
                bootstrap, broker_pid = processes.start_kafka(REPO / "deploy/kafka/kafka.sh")
            _print_machine(bootstrap)
            phases = Phases(args=args, processes=processes, bootstrap=bootstrap, broker_pid=broker_pid)
            if args.profile:
                for stack in stacks:
                    for batch in batches:
                        phases.profile(stack=stack, batch=batch)
            else:
                for round_ in range(1, args.rounds + 1):
                    phases.round = round_
                    if args.rounds > 1:
                        print(f"round {round_} of {args.rounds}")
                    measured: set[str] = set()  # event loops whose bare producer this round measured
                    for stack in stacks:
                        loop = event_loop(stack)
                        phases.stack_round(
                            stack=stack, batches=batches, producer_loop=None if loop in measured else loop
                        )
                        measured.add(loop)
        if phases.results and not args.profile:
            print()
            print_table(phases.results)
            print()
            print_targets(phases.results, stacks=stacks, published=phases.published)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in phases.results], indent=2))
    except KeyboardInterrupt:
        print("\ninterrupted; stopped what the benchmark started", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print_machine(bootstrap: str) -> None:
    versions = [f"{name} {_version(name)}" for name in ("uvloop", "httptools")]
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {', '.join(versions)};"
        f" Kafka at {bootstrap}"
    )


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
