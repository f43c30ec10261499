"""The HTTP servers under test, each run in a process of its own by `ingest.py serve-*`: the bare
route (the framework alone), the ceiling app (ingest without verifying or publishing), ingest, and
with `--publish-path` ingest with free normalization and encoding.

A stack names the event loop and HTTP parser uvicorn runs on:
- uvloop: uvloop and httptools, what `onefunnel ingest` runs on (both are dependencies; the CLI runs
  its loop on uvloop where it is installed, `serving.run`);
- httptools: asyncio and httptools, where uvloop is missing (Windows);
- plain: asyncio and h11, where both are missing.
The benchmark makes the missing ones fail to import, so neither uvicorn nor the CLI can pick them.
"""

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

STACKS = ("plain", "httptools", "uvloop")


def event_loop(stack: str) -> str:
    """The event loop a stack runs on: the bare producer it is compared with runs on the same."""
    return "uvloop" if stack == "uvloop" else "asyncio"


def use_stack(stack: str) -> None:
    """Hide the speedups a stack does without, so neither uvicorn nor the CLI can pick them."""
    if stack not in STACKS:
        raise SystemExit(f"unknown stack {stack!r}; one of {', '.join(STACKS)}")
    if stack == "plain":
        sys.modules["httptools"] = None  # type: ignore[assignment]  # makes `import httptools` fail
    if stack != "uvloop":
        sys.modules["uvloop"] = None  # type: ignore[assignment]


def bare_route_app() -> "FastAPI":
    """The framework alone: a FastAPI app with ingest's route path that reads the body and answers in
    ingest's shape, without ingest's middleware, checks or normalization."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="onefunnel ingest benchmark bare route")

    @app.post("/webhooks/{source}")
    async def receive_webhook(source: str, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"accepted": body.count(b'"eventId"'), "duplicates": 0, "ignored": 0})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_bare_route(*, stack: str, port: int) -> None:
    use_stack(stack)
    import uvicorn

    uvicorn.run(
        bare_route_app(),
        host="127.0.0.1",
        port=port,
        loop=event_loop(stack),
        http="h11" if stack == "plain" else "httptools",
        log_level="warning",
        access_log=False,
    )


def serve_ceiling(*, stack: str) -> None:
    """The issue's ceiling, "the same app answering without verifying or publishing": `onefunnel
    ingest` as `serve_ingest` runs it, with HubSpot's signature check, the encoding of events into bus
    messages and the bus's publish made no-ops. Everything else stays: middleware, body and JSON
    checks, normalization, duplicate memory, metrics, the answer."""
    from onefunnel.ingest.platforms.hubspot import HubSpot
    from onefunnel.shared import envelope
    from onefunnel.shared.bus.kafka import KafkaBus

    async def publish_nothing(self: KafkaBus, topic: str, messages: Sequence[object]) -> None:
        return None

    HubSpot.verify = lambda self, delivery: None  # type: ignore[method-assign]
    envelope.encode = lambda event, *, source: None  # type: ignore[assignment]
    KafkaBus.publish = publish_nothing  # type: ignore[method-assign,assignment]
    serve_ingest(stack=stack)


def serve_publish_path(*, stack: str) -> None:
    """`onefunnel ingest` with normalization and encoding made free, to show what the rest costs: the
    framework, the signature check, the route, the duplicate memory and publishing. Normalizing returns
    placeholders carrying only what the route reads (a new idempotency key and the event type), and
    encoding returns messages built before the server starts, the bare producer's."""
    import itertools

    from ingest_producer import ingest_messages

    from onefunnel.ingest.platforms.base import Delivery, Normalized
    from onefunnel.ingest.platforms.hubspot import HubSpot
    from onefunnel.shared import envelope
    from onefunnel.shared.events import SourceEventType
    from onefunnel.shared.stage_mapping import StageMapping

    messages = itertools.cycle(ingest_messages(10_000, first_event_id=0))
    keys = itertools.count()

    class Placeholder:
        __slots__ = ("event_type", "idempotency_key")

        def __init__(self) -> None:
            self.idempotency_key = f"publish-path:{next(keys)}"
            self.event_type = SourceEventType.CHANGED

    def normalize(self: HubSpot, delivery: Delivery, mapping: StageMapping) -> Normalized:
        count = delivery.body.count(b'"eventId"')
        return Normalized(events=[Placeholder() for _ in range(count)])  # type: ignore[misc]

    HubSpot.normalize = normalize  # type: ignore[assignment,method-assign]
    envelope.encode = lambda event, *, source: next(messages)  # type: ignore[assignment]
    serve_ingest(stack=stack)


def serve_ingest(*, stack: str) -> None:
    """`onefunnel ingest`, configured by the ONEFUNNEL_* environment the benchmark sets."""
    use_stack(stack)
    from onefunnel import cli

    sys.argv = ["onefunnel", "ingest"]
    cli.main()
