"""A minimal keep-alive HTTP/1.1 load generator on asyncio, fast enough not to be what it measures.

Each connection has at most one request in flight (no pipelining, as platforms send webhooks).
- closed loop: every connection sends its next request as soon as the previous one is answered;
  gives the maximum rate.
- open loop: request i is due at start + i / rate, whatever happened before; latency counts from
  that due time, so a stalled server is charged for the requests it kept waiting (no coordinated
  omission).
"""

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

REQUEST_TIMEOUT = 10.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection that answers each request with its status code."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            self._fail(ConnectionError("response without content-length"))
            return
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else end])
        if len(self._buffer) < end + 4 + length:
            return
        status = int(self._buffer[9:12])
        del self._buffer[: end + 4 + length]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("server closed the connection"))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    async def request(self, data: bytes) -> int:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await asyncio.wait_for(self._waiter, REQUEST_TIMEOUT)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class Samples:
    """What one run measured: answers by status, and latencies of those in the window."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    acknowledged: int = 0  # 2xx answers over the whole run, warm-up included
    seconds: float = 0.0


async def closed_loop(
    *, host: str, port: int, connections: int, make: Callable[[], bytes], warmup: float, seconds: float
) -> Samples:
    """Keep `connections` requests in flight; count those answered inside the measuring window."""
    samples = Samples(seconds=seconds)
    begin = time.perf_counter() + warmup
    end = begin + seconds

    async def worker(connection: _Connection) -> None:
        while (sent := time.perf_counter()) < end:
            try:
                status = await connection.request(make())
            except (OSError, TimeoutError):
                samples.errors += 1
                return
            done = time.perf_counter()
            samples.acknowledged += 200 <= status < 300
            if begin <= done < end:
                samples.statuses[status] += 1
                samples.latencies.append(done - sent)

    await _with_connections(host, port, connections, worker)
    return samples


async def open_loop(
    *,
    host: str,
    port: int,
    connections: int,
    make: Callable[[], bytes],
    rate: float,
    warmup: float,
    seconds: float,
) -> Samples:
    """Send `rate` requests per second on schedule; latency is measured from each one's due time."""
    samples = Samples(seconds=seconds)
    start = time.perf_counter() + 0.05
    total, warm = int(rate * (warmup + seconds)), int(rate * warmup)
    claimed = 0

    async def worker(connection: _Connection) -> None:
        nonlocal claimed
        while claimed < total:
            index, claimed = claimed, claimed + 1
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                status = await connection.request(make())
            except (OSError, TimeoutError):
                samples.errors += 1
                return
            samples.acknowledged += 200 <= status < 300
            if index >= warm:
                samples.statuses[status] += 1
                samples.latencies.append(time.perf_counter() - due)

    await _with_connections(host, port, connections, worker)
    # When the server fell behind, the last answers came after the schedule ended: rate over real time.
    samples.seconds = max(seconds, time.perf_counter() - (start + warmup))
    return samples


async def _with_connections(
    host: str, port: int, count: int, worker: Callable[[_Connection], Awaitable[None]]
) -> None:
    loop = asyncio.get_running_loop()
    opened = [await loop.create_connection(_Connection, host, port) for _ in range(count)]
    connections = [protocol for _, protocol in opened]
    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()


def summary(samples: Samples, *, batch: int) -> dict[str, float]:
    """Rates and latency percentiles of a run, in requests, events and milliseconds."""
    ok = sum(n for status, n in samples.statuses.items() if 200 <= status < 300)
    answered = sum(samples.statuses.values())
    latencies = sorted(samples.latencies)
    return {
        "requests": answered,
        "ok": ok,
        "failed": answered - ok + samples.errors,
        "acknowledged": samples.acknowledged,
        "rps": answered / samples.seconds,
        "eps": ok * batch / samples.seconds,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "cpu_s": _cpu_seconds(),
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
