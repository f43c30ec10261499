"""The benchmark's results: one line per phase as it runs, then a Markdown table and the targets."""

from dataclasses import dataclass, field

BATCH_1_SHARE_OF_CEILING = 0.60  # ingest's requests/s at batch 1, against the ceiling app's
BATCH_50_SHARE_OF_PRODUCER = 0.50  # ingest's events/s at batch 50, against the bare producer's
P99_LIMIT_MS = 50.0  # ingest's p99 at half its maximum rate

_NAMES = {
    "framework": "bare route",
    "ceiling": "ceiling app",
    "ingest": "ingest",
    "publish": "publish path",
    "producer": "bare producer",
}


@dataclass
class Result:
    stack: str  # plain, httptools, uvloop; asyncio or uvloop for the producer
    server: str  # framework (the bare route), ceiling, ingest, publish (its path alone), producer
    batch: int
    load: str  # max (closed loop) or half (open loop at half the max rate)
    rps: float  # requests/s; batches/s for the producer
    eps: float  # events/s acknowledged (2xx)
    p50_ms: float
    p99_ms: float
    ok: int  # 2xx answers in the measured window
    failed: int
    acknowledged: int  # 2xx answers over the whole run, warm-up included
    cpu_us: float  # CPU of the server (or of the bare producer) per request, in microseconds
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, by process

    def progress_line(self) -> str:
        failed = f"  FAILED {self.failed}" if self.failed else ""
        return (
            f"  {self.stack:<9} {_NAMES[self.server]:<13} batch {self.batch:>3} {self.load:<4}"
            f" {self.rps:8.0f} req/s {self.eps:9.0f} ev/s  p50 {self.p50_ms:6.1f} ms"
            f"  p99 {self.p99_ms:6.1f} ms  {self.cpu_us:5.0f} µs CPU/req  CPU {self.cpu_text()}{failed}"
        )

    def cpu_text(self) -> str:
        return " ".join(f"{name} {share:.0%}" for name, share in self.cpu.items())


def print_table(results: list[Result]) -> None:
    columns = ["stack", "server", "batch", "load", "requests/s", "events/s", "p50 ms", "p99 ms", "failed"]
    columns += ["CPU µs/request", "CPU (1 core = 100%)"]
    print("| " + " | ".join(columns) + " |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        load = "max" if r.load == "max" else "½ max, open loop"
        print(
            f"| {r.stack} | {_NAMES[r.server]} | {r.batch} | {load} | {r.rps:,.0f} | {r.eps:,.0f} |"
            f" {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.failed} | {r.cpu_us:,.0f} | {r.cpu_text()} |"
        )


def print_targets(results: list[Result], *, stacks: list[str], published: dict[str, tuple[int, int]]) -> None:
    """Each target per stack, PASS or FAIL, with the figures it was judged on.

    The verdict is on the measured rates. The same ratio of CPU per request (per event) follows
    each: what the ratio would be if each process had a core of its own, which a shared machine
    cannot promise (the broker runs on the same two cores)."""

    def find(stack: str, server: str, batch: int, load: str) -> Result | None:
        matching = [
            r for r in results if (r.stack, r.server, r.batch, r.load) == (stack, server, batch, load)
        ]
        return matching[0] if matching else None

    for stack in stacks:
        print(f"targets, {stack} stack:")
        ingest_1, ceiling_1 = find(stack, "ingest", 1, "max"), find(stack, "ceiling", 1, "max")
        if ingest_1 and ceiling_1:
            share = ingest_1.rps / ceiling_1.rps
            print(
                f"  {_verdict(share >= BATCH_1_SHARE_OF_CEILING)} batch 1: ingest {ingest_1.rps:,.0f} req/s"
                f" = {share:.0%} of the ceiling app's {ceiling_1.rps:,.0f}"
                f" (target >= {BATCH_1_SHARE_OF_CEILING:.0%});"
                f" by CPU per request {ceiling_1.cpu_us:,.0f} / {ingest_1.cpu_us:,.0f} µs"
                f" = {ceiling_1.cpu_us / ingest_1.cpu_us:.0%}"
            )
        bare_1 = find(stack, "framework", 1, "max")
        if ingest_1 and bare_1:  # no target: how far the whole app is from the framework alone
            print(
                f"  info batch 1: ingest {ingest_1.rps:,.0f} req/s = {ingest_1.rps / bare_1.rps:.0%} of the"
                f" bare route's {bare_1.rps:,.0f}; by CPU per request {bare_1.cpu_us:,.0f} /"
                f" {ingest_1.cpu_us:,.0f} µs = {bare_1.cpu_us / ingest_1.cpu_us:.0%}"
            )
        loop = "uvloop" if stack == "uvloop" else "asyncio"
        ingest_50, producer_50 = find(stack, "ingest", 50, "max"), find(loop, "producer", 50, "max")
        publish_50 = find(stack, "publish", 50, "max")
        if publish_50 and producer_50:  # no target: the share ingest could reach with free normalization
            print(
                f"  info batch 50: the publish path alone {publish_50.eps:,.0f} events/s ="
                f" {publish_50.eps / producer_50.eps:.0%} of the bare producer's; by CPU per event"
                f" {producer_50.cpu_us / 50:,.1f} / {publish_50.cpu_us / 50:,.1f} µs"
                f" = {producer_50.cpu_us / publish_50.cpu_us:.0%}"
            )
        if ingest_50 and producer_50:
            share = ingest_50.eps / producer_50.eps
            print(
                f"  {_verdict(share >= BATCH_50_SHARE_OF_PRODUCER)} batch 50: ingest"
                f" {ingest_50.eps:,.0f} events/s = {share:.0%} of the bare producer's"
                f" {producer_50.eps:,.0f} on {loop} (target >= {BATCH_50_SHARE_OF_PRODUCER:.0%});"
                f" by CPU per event {producer_50.cpu_us / 50:,.1f} / {ingest_50.cpu_us / 50:,.1f} µs"
                f" = {producer_50.cpu_us / ingest_50.cpu_us:.0%}"
            )
        for half in (r for r in results if (r.stack, r.server, r.load) == (stack, "ingest", "half")):
            print(
                f"  {_verdict(half.p99_ms < P99_LIMIT_MS)} batch {half.batch}: ingest p99"
                f" {half.p99_ms:.1f} ms at {half.rps:,.0f} req/s, half its maximum"
                f" (target < {P99_LIMIT_MS:.0f} ms)"
            )
        if stack in published:
            stored, acknowledged = published[stack]
            print(
                f"  {_verdict(stored >= acknowledged)} topic holds {stored:,} events;"
                f" ingest acknowledged {acknowledged:,} with 2xx"
            )


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"
