"""The HubSpot and Salesforce fakes, served over HTTP on loopback for the sync process to call.

They send no webhooks (no webhook URL): the benchmark publishes every source event itself. Their
rate limits are raised out of the way; the client-side limits of the sync process still apply.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from sync_infra import free_port

from onefunnel.simulators.hubspot import HubSpotFake
from onefunnel.simulators.salesforce import FakeSalesforce

HUBSPOT_TOKEN = "pat-na1-bench-token"  # noqa: S105  # the fake's own credential


@dataclass(frozen=True)
class Fakes:
    hubspot: HubSpotFake
    salesforce: FakeSalesforce
    hubspot_url: str
    salesforce_url: str


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl-C belongs to the benchmark, which stops these servers itself


async def _started(app: FastAPI, port: int) -> tuple[_Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"fake on port {port} did not start")
            await asyncio.sleep(0.02)
    return server, task


@asynccontextmanager
async def serve_fakes(*, latency: float) -> AsyncIterator[Fakes]:
    """Serve both fakes, each answering every call after `latency` seconds."""
    hubspot_port, salesforce_port = free_port(), free_port()
    salesforce_url = f"http://127.0.0.1:{salesforce_port}"
    hubspot = HubSpotFake(access_tokens=[HUBSPOT_TOKEN], rate_limit_max=10**9, latency=latency)
    salesforce = FakeSalesforce(instance_url=salesforce_url, api_limit=10**9, latency=latency)
    servers = [await _started(hubspot.app, hubspot_port), await _started(salesforce.app, salesforce_port)]
    try:
        yield Fakes(hubspot, salesforce, f"http://127.0.0.1:{hubspot_port}", salesforce_url)
    finally:
        for server, _ in servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in servers), return_exceptions=True)
