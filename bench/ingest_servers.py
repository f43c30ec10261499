"""The two HTTP servers under test, each run in a process of its own by `ingest.py serve-*`.

A stack names the event loop and HTTP parser uvicorn runs on:
- plain: asyncio and h11, what a bare `pip install onefunnel` gets;
- httptools: asyncio and httptools, what `onefunnel ingest` gets once httptools is installed (uvicorn
  picks it up; the event loop stays asyncio because the CLI creates it with asyncio.run);
- uvloop: uvloop and httptools, which `onefunnel ingest` would get only if the CLI created its loop
  with uvloop; here the benchmark installs uvloop's loop policy before calling the same CLI.
"""

import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

STACKS = ("plain", "httptools", "uvloop")


def use_stack(stack: str) -> None:
    """Hide the speedups a stack does without, so uvicorn's auto-detection cannot pick them."""
    if stack not in STACKS:
        raise SystemExit(f"unknown stack {stack!r}; one of {', '.join(STACKS)}")
    if stack == "plain":
        sys.modules["httptools"] = None  # type: ignore[assignment]  # makes `import httptools` fail
    if stack != "uvloop":
        sys.modules["uvloop"] = None  # type: ignore[assignment]
    else:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def ceiling_app() -> "FastAPI":
    """The framework's ceiling: ingest's route, answering like ingest without verifying or publishing."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="onefunnel ingest benchmark ceiling")

    @app.post("/webhooks/{source}")
    async def receive_webhook(source: str, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"accepted": body.count(b'"eventId"'), "duplicates": 0, "ignored": 0})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_ceiling(*, stack: str, port: int) -> None:
    use_stack(stack)
    import uvicorn

    uvicorn.run(
        ceiling_app(),
        host="127.0.0.1",
        port=port,
        loop="uvloop" if stack == "uvloop" else "asyncio",
        http="h11" if stack == "plain" else "httptools",
        log_level="warning",
        access_log=False,
    )


def serve_ingest(*, stack: str) -> None:
    """`onefunnel ingest`, configured by the ONEFUNNEL_* environment the benchmark sets."""
    use_stack(stack)
    from onefunnel import cli

    sys.argv = ["onefunnel", "ingest"]
    cli.main()
