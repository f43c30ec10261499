"""The measured phases: each server under closed then open-loop load, and the bare producer.

Every load generator and producer runs in a process of its own (`ingest.py load|produce`), so the
process under test has one core to itself as far as the machine allows. A phase charges each
process the CPU it used meanwhile; what the machine spent beyond them is `other` (the kernel's
loopback work, and anything else running on a shared machine). Each phase waits up to
`quiet_wait` seconds for a quiet machine, and a phase during which `other` exceeded DISTURBED_CORES
is measured again, up to `retries` times, keeping the least disturbed run; all of this waiting and
re-measuring together stops once it has cost `patience` seconds, so a busy machine cannot stretch
the run without bound.
"""

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ingest_deliveries import SECRET
from ingest_processes import Processes, cpu_seconds, free_port, machine_busy, wait_for_quiet
from ingest_report import Result

HERE = Path(__file__).resolve().parent
QUIET_CORES = 0.3  # an idle broker and idle servers stay well below this
DISTURBED_CORES = 0.4


@dataclass(frozen=True)
class _Server:
    port: int
    process: "subprocess.Popen[bytes]"
    topic: str  # its source-events topic (the bare route publishes nothing)


class Phases:
    def __init__(
        self, *, args: argparse.Namespace, processes: Processes, bootstrap: str, broker_pid: int | None
    ) -> None:
        self.args = args
        self.processes = processes
        self.bootstrap = bootstrap
        self.broker_pid = broker_pid
        self.run_id = uuid.uuid4().hex[:8]
        self.results: list[Result] = []
        self.round = 1  # set by the caller: the results it measures next belong to this round
        self.published: dict[str, tuple[int, int]] = {}  # stack: (events on the topic, 2xx events)
        self._acknowledged: Counter[str] = Counter()  # 2xx events of the running ingest, retries included
        self._phase = 0
        self._patience = args.patience  # seconds left for waiting and re-measuring

    def stack_round(self, *, stack: str, batches: list[int], producer_loop: str | None) -> None:
        """One round on one stack. Every server starts first and idles while another is measured, so that for
        each batch size the maximum rates run back to back, seconds apart: the targets compare them, and
        this machine's speed drifts over minutes. The bare producer (`producer_loop`, when this round still
        needs it) runs right after ingest; the half-rate phases follow. Last, the topic check."""
        servers = self._start_servers(stack)
        ingest = servers["ingest"]
        self._acknowledged[stack] = 0
        try:
            before = asyncio.run(_events_on(self.bootstrap, ingest.topic))
            for batch in batches:
                fastest = {}
                for name, server in servers.items():
                    argv = ["load", "--port", str(server.port)]
                    fastest[name] = self._measure(
                        argv, stack=stack, server=name, batch=batch, pid=server.process.pid, rate=None
                    )
                    if name == "ingest" and producer_loop is not None:
                        self.producer(loop=producer_loop, batch=batch)
                for name, server in servers.items():
                    half = fastest[name].rps / 2
                    argv = ["load", "--port", str(server.port), "--rate", f"{half:.1f}"]
                    self._measure(
                        argv, stack=stack, server=name, batch=batch, pid=server.process.pid, rate=half
                    )
        finally:
            for server in servers.values():
                self.processes.stop(server.process)
        stored = asyncio.run(_events_on(self.bootstrap, ingest.topic)) - before
        acknowledged = self._acknowledged[stack]
        stored_before, acknowledged_before = self.published.get(stack, (0, 0))  # earlier rounds
        self.published[stack] = (stored_before + stored, acknowledged_before + acknowledged)
        verdict = "OK" if stored >= acknowledged else "MISSING EVENTS"
        topic = ingest.topic
        print(f"  topic {topic}: {stored:,} events stored, {acknowledged:,} acknowledged with 2xx: {verdict}")

    def _start_servers(self, stack: str) -> dict[str, "_Server"]:
        """The servers of one stack, by the name results carry, in the order they are measured."""
        commands = {"framework": "serve-bare-route", "ceiling": "serve-ceiling", "ingest": "serve-ingest"}
        if self.args.publish_path:
            commands["publish"] = "serve-publish-path"
        servers: dict[str, _Server] = {}
        try:
            for name, command in commands.items():
                port, topic = free_port(), f"bench.{self.run_id}.{self.round}.{stack}.{name}"
                if name == "framework":  # no bus, no settings: ready when it answers
                    argv = [str(HERE / "ingest.py"), command, "--stack", stack, "--port", str(port)]
                    process = self.processes.start_python(f"{name}-{stack}", argv, env={})
                    self.processes.wait_until_answers(process, port=port, path="/healthz")
                else:
                    process = self._start_app(command, name=name, stack=stack, port=port, topic=topic)
                servers[name] = _Server(port=port, process=process, topic=topic)
        except BaseException:
            for server in servers.values():
                self.processes.stop(server.process)
            raise
        return servers

    def profile(self, *, stack: str, batch: int) -> None:
        """Load ingest at its maximum rate under pyinstrument; print where its CPU went."""
        from ingest_profile import breakdown

        port, topic = free_port(), f"bench.{self.run_id}.{stack}.profiled-{batch}"
        session = self.processes.work / f"ingest-{stack}-{batch}.pyisession"
        process = self._start_app(
            "serve-ingest", name="ingest", stack=stack, port=port, topic=topic, profile=session
        )
        try:
            self._wait_for_quiet()
            argv, pid = ["load", "--port", str(port)], process.pid
            result = self._run_once(argv, stack=stack, server="ingest", batch=batch, pid=pid, rate=None)
        finally:
            self.processes.stop(process)
        print(f"ingest on the {stack} stack, batch {batch}, under pyinstrument (slower than unprofiled):")
        requests = result.acknowledged
        lines = breakdown(session, requests=requests, events=requests * batch, cpu_us=result.cpu_us)
        print("\n".join(lines))

    def _start_app(
        self, command: str, *, name: str, stack: str, port: int, topic: str, profile: Path | None = None
    ) -> "subprocess.Popen[bytes]":
        """Start `onefunnel ingest` or one of its variants (ingest_servers.py) on `port`."""
        argv = [str(HERE / "ingest.py"), command, "--stack", stack]
        if profile is not None:
            argv += ["--profile-to", str(profile)]
        process = self.processes.start_python(f"{name}-{stack}", argv, env=self._ingest_env(port, topic))
        # Ready means the producer is connected and the topics exist.
        self.processes.wait_until_answers(process, port=port, path="/readyz")
        return process

    def producer(self, *, loop: str, batch: int) -> None:
        topic = f"bench.{self.run_id}.producer-{loop}"
        argv = ["produce", "--bootstrap", self.bootstrap, "--topic", topic, "--loop", loop]
        argv += ["--partitions", str(self.args.partitions)]
        self._measure(argv, stack=loop, server="producer", batch=batch, pid=None, rate=None)

    def _ingest_env(self, port: int, topic: str) -> dict[str, str]:
        prefix = f"bench.{self.run_id}"
        return {
            "ONEFUNNEL_BUS": "kafka",
            "ONEFUNNEL_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ONEFUNNEL_KAFKA_PARTITIONS": str(self.args.partitions),
            "ONEFUNNEL_HUBSPOT_CLIENT_SECRET": SECRET,
            "ONEFUNNEL_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "ONEFUNNEL_INGEST_HOST": "127.0.0.1",
            "ONEFUNNEL_INGEST_PORT": str(port),
            "ONEFUNNEL_LOG_LEVEL": "WARNING",
            "ONEFUNNEL_TOPIC_SOURCE_EVENTS": topic,
            "ONEFUNNEL_TOPIC_STAGE_CHANGES": f"{prefix}.lead-stage-changes",
            "ONEFUNNEL_TOPIC_DEAD_LETTERS": f"{prefix}.dead-letters",
            "ONEFUNNEL_DATABASE_URL": f"sqlite+aiosqlite:///{self.processes.work}/unused.sqlite3",
        }

    def _measure(
        self, argv: list[str], *, stack: str, server: str, batch: int, pid: int | None, rate: float | None
    ) -> Result:
        """Run one phase, again while another process on the machine disturbed it; keep the calmest."""
        attempts: list[Result] = []
        for attempt in range(1 + self.args.retries):
            if attempt:
                other = attempts[-1].cpu["other"]
                print(f"{attempts[-1].progress_line()}\n    disturbed (other {other:.0%}); again")
            self._wait_for_quiet()
            started = time.monotonic()
            result = self._run_once(argv, stack=stack, server=server, batch=batch, pid=pid, rate=rate)
            if attempt:
                self._patience -= time.monotonic() - started
            attempts.append(result)
            if server == "ingest":
                self._acknowledged[stack] += result.acknowledged * batch
            if result.cpu["other"] <= DISTURBED_CORES or self._patience <= 0:
                break
        chosen = min(attempts, key=lambda r: r.cpu["other"])
        chosen.round = self.round
        self.results.append(chosen)
        print(chosen.progress_line(), flush=True)
        return chosen

    def _wait_for_quiet(self) -> None:
        started = time.monotonic()
        busy = wait_for_quiet(below=QUIET_CORES, timeout=min(self.args.quiet_wait, max(0.0, self._patience)))
        self._patience -= max(0.0, time.monotonic() - started - 1.0)  # one second's look is always due
        if busy >= QUIET_CORES:
            print(f"  (machine still {busy:.0%} busy before this phase)")

    def _run_once(
        self, argv: list[str], *, stack: str, server: str, batch: int, pid: int | None, rate: float | None
    ) -> Result:
        self._phase += 1
        argv = [
            *argv,
            "--batch", str(batch),
            "--connections", str(self.args.connections),
            "--warmup", str(self.args.warmup),
            "--seconds", str(self.args.seconds),
            "--first-event-id", str(self._phase * 10**9),
        ]  # fmt: skip
        watched = {"server": pid, "broker": self.broker_pid}
        cpu_before = {name: cpu_seconds(p) for name, p in watched.items() if p}
        busy_before, wall_before = machine_busy(), time.monotonic()
        completed = subprocess.run(  # noqa: S603  # our own script, our own arguments
            [sys.executable, str(HERE / "ingest.py"), *argv],
            capture_output=True,
            text=True,
            timeout=self.args.warmup + self.args.seconds + 120,
            check=False,
            start_new_session=True,
        )
        wall = time.monotonic() - wall_before
        if completed.returncode != 0:
            raise SystemExit(f"{argv[0]} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
        measured = json.loads(completed.stdout.strip().splitlines()[-1])
        used = {name: cpu_seconds(p) - cpu_before[name] for name, p in watched.items() if p}
        cpu = {name: seconds / wall for name, seconds in used.items()}
        cpu["client"] = measured["cpu_s"] / wall
        cpu["other"] = max(0.0, (machine_busy() - busy_before) / wall - sum(cpu.values()))
        return Result(
            stack=stack,
            server=server,
            batch=batch,
            load="max" if rate is None else "half",
            rps=measured["rps"],
            eps=measured["eps"],
            p50_ms=measured["p50_ms"],
            p99_ms=measured["p99_ms"],
            ok=measured["ok"],
            failed=measured["failed"],
            acknowledged=measured["acknowledged"],
            # The server's CPU over every answer of the phase; the producer times its own loop.
            cpu_us=used["server"] / measured["acknowledged"] * 1e6 if pid else measured["cpu_us"],
            cpu=cpu,
        )


async def _events_on(bootstrap: str, topic: str) -> int:
    """Sum of the end offsets of every partition of `topic`: how many events it holds."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    metadata = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="onefunnel-bench")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="onefunnel-bench")
    await metadata.start()
    await consumer.start()
    try:
        partitions = await metadata.partitions_for(topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()
        await metadata.stop()
