"""`onefunnel demo`: print where everything is, play the traffic, show the funnel live."""

import asyncio
import secrets
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live

from onefunnel.demo.run import Demo, DemoOptions, drive
from onefunnel.demo.snapshot import fetch_snapshot
from onefunnel.demo.view import render
from onefunnel.shared.stages import Stage

REFRESH_SECONDS = 1.0
World = tuple[Demo, asyncio.Task[None]]


async def run(
    options: DemoOptions, *, console: Console, keep_running: bool, world: AbstractAsyncContextManager[World]
) -> None:
    """Play the demo in `world` (local: everything in this process; remote: against a running stack)."""
    started, since = time.monotonic(), datetime.now(UTC)
    async with world as (demo, server):
        _introduce(demo, options, console)
        traffic = asyncio.create_task(drive(demo, options))
        first_won: float | None = None
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not traffic.done() and not server.done():
                snapshot = await fetch_snapshot(demo, options, since=since)
                won = snapshot.stages.get(Stage.CUSTOMER)
                if first_won is None and won is not None and won.entries:
                    first_won = time.monotonic() - started
                live.update(render(snapshot, demo.progress, elapsed=time.monotonic() - started, done=False))
                await asyncio.sleep(REFRESH_SECONDS)
            if traffic.done():
                await traffic  # surfaces a traffic failure
                await asyncio.sleep(3)  # the last webhooks and write-backs land
            snapshot = await fetch_snapshot(demo, options, since=since)
            live.update(render(snapshot, demo.progress, elapsed=time.monotonic() - started, done=True))
        console.print()
        if first_won is not None:
            console.print(f"First lead won (customer) {first_won:.0f} s after the demo started.")
        if keep_running and not server.done():
            console.print("Traffic done. The services stay up for the BI API until Ctrl-C.")
            await server
        traffic.cancel()


def _introduce(demo: Demo, options: DemoOptions, console: Console) -> None:
    metrics, ingest = demo.urls["metrics"], demo.urls["ingest"]
    console.print(
        f"[bold]onefunnel demo[/] seed {options.seed}, {options.rate:g} leads/s for {options.duration:g} s; "
        f"state in {options.state_dir}"
    )
    console.print(f"  webhooks   {ingest}/webhooks/{{hubspot,salesforce}}   metrics {ingest}/metrics")
    if "sync" in demo.urls:
        console.print(
            f"  sync       {demo.urls['sync']}/v1/sync/failures   metrics {demo.urls['sync']}/metrics"
        )
    console.print(f"  BI API     {metrics}/v1/funnel   OpenAPI {metrics}/docs   metrics {metrics}/metrics")
    console.print(f"  API token  {options.api_token}   (Authorization: Bearer <token>)")


def api_token(configured: list[str]) -> str:
    """The first ONEFUNNEL_API_TOKENS value, or a new random one for this demo."""
    return configured[0] if configured else secrets.token_urlsafe(24)


def default_state_dir(seed: int) -> Path:
    return Path(".onefunnel") / f"demo-{seed}"
