"""The benchmark's results: one line per phase as it runs, then a Markdown table and the targets."""

from dataclasses import dataclass, field
from statistics import median

from ingest_servers import event_loop

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
    round: int = 1  # with --rounds, which pass over the servers measured it

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
    rounds = max(r.round for r in results) > 1  # a first column then says which round measured a row
    columns = ["round"] * rounds + ["stack", "server", "batch", "load", "requests/s", "events/s", "p50 ms"]
    columns += ["p99 ms", "failed", "CPU µs/request", "CPU (1 core = 100%)"]
    print("| " + " | ".join(columns) + " |")
    print("| ---: " * rounds + "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        load = "max" if r.load == "max" else "½ max, open loop"
        print(
            f"| {r.round} "
            * rounds
            + f"| {r.stack} | {_NAMES[r.server]} | {r.batch} | {load} | {r.rps:,.0f} | {r.eps:,.0f} |"
            f" {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.failed} | {r.cpu_us:,.0f} | {r.cpu_text()} |"
        )


def print_targets(results: list[Result], *, stacks: list[str], published: dict[str, tuple[int, int]]) -> None:
    """Each target per stack, PASS or FAIL, with the figures it was judged on.

    The verdict is on the measured rates. The same ratio of CPU per request (per event) follows
    each: what the ratio would be if each process had a core of its own, which a shared machine
    cannot promise (the broker runs on the same two cores). With several rounds, each ratio is taken
    within a round (its maximum rates measured back to back) and the verdict is on the median of the rounds.
    """

    def rounds(stack: str, server: str, batch: int, load: str) -> dict[int, Result]:
        return {
            r.round: r
            for r in results
            if (r.stack, r.server, r.batch, r.load) == (stack, server, batch, load)
        }

    for stack in stacks:
        print(f"targets, {stack} stack:")
        loop = event_loop(stack)
        ingest_1, ceiling_1 = rounds(stack, "ingest", 1, "max"), rounds(stack, "ceiling", 1, "max")
        _share(
            "batch 1: ingest",
            ingest_1,
            "the ceiling app's",
            ceiling_1,
            BATCH_1_SHARE_OF_CEILING,
            batch=1,
        )
        # No target: how far the whole app is from the framework alone.
        _share(
            "batch 1: ingest",
            ingest_1,
            "the bare route's",
            rounds(stack, "framework", 1, "max"),
            None,
            batch=1,
        )
        producer_50 = rounds(loop, "producer", 50, "max")
        # No target: the share ingest could reach with free normalization.
        _share(
            "batch 50: the publish path alone",
            rounds(stack, "publish", 50, "max"),
            "the bare producer's",
            producer_50,
            None,
            batch=50,
        )
        _share(
            "batch 50: ingest",
            rounds(stack, "ingest", 50, "max"),
            "the bare producer's",
            producer_50,
            BATCH_50_SHARE_OF_PRODUCER,
            batch=50,
            where=f" on {loop}",
        )
        for batch in sorted(
            {r.batch for r in results if (r.stack, r.server, r.load) == (stack, "ingest", "half")}
        ):
            halves = [r for _, r in sorted(rounds(stack, "ingest", batch, "half").items())]
            p99 = median(r.p99_ms for r in halves)
            each = ", ".join(f"{r.p99_ms:.1f}" for r in halves)
            each = f", median of {len(halves)} rounds ({each})" if len(halves) > 1 else ""
            rps = ", ".join(f"{r.rps:,.0f}" for r in halves)
            print(
                f"  {_verdict(p99 < P99_LIMIT_MS)} batch {batch}: ingest p99 {p99:.1f} ms{each}"
                f" at {rps} req/s, half its maximum (target < {P99_LIMIT_MS:.0f} ms)"
            )
        if stack in published:
            stored, acknowledged = published[stack]
            print(
                f"  {_verdict(stored >= acknowledged)} topic holds {stored:,} events;"
                f" ingest acknowledged {acknowledged:,} with 2xx"
            )


def _share(
    what: str,
    measured: dict[int, Result],
    against: str,
    ceiling: dict[int, Result],
    target: float | None,
    *,
    batch: int,
    where: str = "",
) -> None:
    """One line: `measured`'s rate as a share of `ceiling`'s, round by round; a verdict given a target.

    Requests/s at batch 1, events/s otherwise; CPU per request at batch 1, per event otherwise."""
    paired = [(measured[n], ceiling[n]) for n in sorted(measured) if n in ceiling]
    if not paired:
        return
    unit, unit_cpu, digits = ("req/s", "request", 0) if batch == 1 else ("events/s", "event", 1)
    rate = (lambda r: r.rps) if batch == 1 else (lambda r: r.eps)
    shares = [rate(m) / rate(c) for m, c in paired]
    by_cpu = [c.cpu_us / m.cpu_us for m, c in paired]
    label = "info" if target is None else _verdict(median(shares) >= target)
    goal = "" if target is None else f" (target >= {target:.0%})"
    if len(paired) == 1:
        [(m, c)] = paired
        print(
            f"  {label} {what} {rate(m):,.0f} {unit} = {shares[0]:.0%} of {against}"
            f" {rate(c):,.0f}{where}{goal};"
            f" by CPU per {unit_cpu} {c.cpu_us / batch:,.{digits}f} / {m.cpu_us / batch:,.{digits}f} µs"
            f" = {by_cpu[0]:.0%}"
        )
    else:
        print(
            f"  {label} {what} {unit} = {median(shares):.0%} of {against}{where},"
            f" median of {len(paired)} rounds"
            f" ({', '.join(f'{s:.0%}' for s in shares)}){goal}; by CPU per {unit_cpu}, median"
            f" {median(by_cpu):.0%} ({', '.join(f'{s:.0%}' for s in by_cpu)})"
        )


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"
