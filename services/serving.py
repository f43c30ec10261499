"""Serve one or several ASGI apps from one process, stopping them together."""

import asyncio
import functools
import gc
import signal
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

# Net allocations of container objects between two collections of the youngest generation (Python's
# default is 700). A 50-event webhook or a consumer batch allocates tens of thousands of short-lived
# objects; at 700, the collector ran about a hundred times a second and promoted the objects of the
# requests in flight, whose full collections then walked every object of the process: 10-19 % of
# ingest's and sync's CPU, and pauses of ~0.1 s (docs/benchmarks.md, "The garbage collector").
YOUNG_COLLECTION_THRESHOLD = 20_000

T = TypeVar("T")


class StartupFailed(Exception):
    """A server could not start (port taken, application start-up failed)."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    app: FastAPI
    host: str
    port: int


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # serve() below handles SIGINT/SIGTERM once for every server of the process


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to the end, on uvloop where it is installed, else on asyncio's loop.

    With httptools, uvloop (a dependency except on Windows) takes about a quarter off what uvicorn and
    FastAPI cost per request (the bare route in docs/benchmarks.md). The services' own work dominates
    their CPU, so they gain less: within the machine's noise in the comparisons recorded there.
    """
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(main)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it
        return None
    return uvloop.new_event_loop


@functools.cache  # once per process: a second freeze would keep whatever lives then for good
def settle_garbage_collector() -> None:
    """Freeze what was built before serving (modules, schemas, apps) out of the collector's sight, and
    collect less often.

    Frozen objects are never collected: only what lives for the whole process belongs there.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


async def serve(endpoints: Sequence[Endpoint], *, stop: asyncio.Event | None = None) -> None:
    """Run every endpoint until SIGINT/SIGTERM, `stop`, or one of them stopping; raise if one failed."""
    settle_garbage_collector()
    servers = [
        _Server(
            uvicorn.Config(e.app, host=e.host, port=e.port, log_config=None, access_log=False, lifespan="on")
        )
        for e in endpoints
    ]

    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    stopper = asyncio.create_task(_wait_and_stop(stop, stop_all)) if stop is not None else None

    async def run(server: _Server) -> None:
        try:
            await server.serve()
        except SystemExit:
            pass  # uvicorn exits when it cannot bind or start; reported below with the others
        finally:
            stop_all()  # one server down takes the process down, so a supervisor restarts it whole

    try:
        await asyncio.gather(*(run(s) for s in servers))
    finally:
        if stopper is not None:
            stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    failed = [e.name for e, s in zip(endpoints, servers, strict=True) if not s.started]
    if failed:
        raise StartupFailed(f"could not start: {', '.join(failed)} (see the log above)")


async def _wait_and_stop(stop: asyncio.Event, stop_all: Callable[[], None]) -> None:
    await stop.wait()
    stop_all()
