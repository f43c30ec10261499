"""Run the demo: the three services, the HubSpot and Salesforce simulators, traffic, a live view.

The services run exactly as `onefunnel run` runs them (embedded bus, SQLite, ports 8000-8002); the
simulators stand in for the platforms: their webhooks go over HTTP to ingest, signed as the
platforms sign them, and sync writes back to them through the real clients.
"""

import asyncio
import random
import shutil
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from onefunnel import compose, serving
from onefunnel.demo.flaky import DuplicatingTransport
from onefunnel.demo.traffic import Progress, plan, run_traffic
from onefunnel.ingest.settings import IngestSettings
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.shared.bus import open_bus
from onefunnel.shared.database import create_engine
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import BusKind, BusSettings, DatabaseSettings, TopicSettings
from onefunnel.simulators.hubspot import HubSpotFake
from onefunnel.simulators.salesforce import FakeSalesforce
from onefunnel.sync.platforms.base import PlatformClient
from onefunnel.sync.platforms.hubspot import HubSpotClient
from onefunnel.sync.platforms.salesforce import SalesforceClient
from onefunnel.sync.platforms.throttle import Throttle
from onefunnel.sync.settings import SyncSettings

HUBSPOT_SECRET = "demo-hubspot-client-secret"  # noqa: S105 (the simulator's own, well-known secret)
HUBSPOT_TOKEN = "pat-na1-demo-token"  # noqa: S105
SALESFORCE_URL = "https://demo.my.salesforce.com"


@dataclass(frozen=True)
class DemoOptions:
    duration: float
    rate: float
    seed: int
    state_dir: Path
    api_token: str
    ingest: IngestSettings
    sync: SyncSettings
    metrics: MetricsSettings


@dataclass
class Demo:
    hubspot: HubSpotFake
    salesforce: FakeSalesforce
    progress: Progress
    urls: dict[str, str]
    stop: asyncio.Event
    duplicating: DuplicatingTransport


@asynccontextmanager
async def demo_world(options: DemoOptions) -> AsyncIterator[tuple[Demo, asyncio.Task[None]]]:
    """Start services and simulators; yield them with the task serving HTTP (ends on Ctrl-C or stop)."""
    shutil.rmtree(options.state_dir, ignore_errors=True)  # the same seed gives the same funnel
    options.state_dir.mkdir(parents=True)
    topics, funnel = TopicSettings(), load_funnel()
    ingest_url = f"http://{options.ingest.ingest_host}:{options.ingest.ingest_port}"
    async with AsyncExitStack() as stack:
        bus = await stack.enter_async_context(
            open_bus(
                BusSettings(bus=BusKind.LOCAL, local_bus_path=options.state_dir / "bus.sqlite3"),
                topics=topics.all,
            )
        )
        engine = create_engine(
            DatabaseSettings(database_url=f"sqlite:///{options.state_dir}/onefunnel.sqlite3")
        )
        stack.push_async_callback(engine.dispose)
        duplicating = DuplicatingTransport(
            httpx.AsyncHTTPTransport(), rng=random.Random(options.seed), share=0.03
        )
        to_ingest = await stack.enter_async_context(httpx.AsyncClient(transport=duplicating, timeout=10.0))
        hubspot = HubSpotFake(
            access_tokens=[HUBSPOT_TOKEN],
            webhook_url=f"{ingest_url}/webhooks/hubspot",
            client_secret=HUBSPOT_SECRET,
            webhook_client=to_ingest,
            shuffle_webhooks=True,
            seed=options.seed,
        )
        salesforce = FakeSalesforce(
            instance_url=SALESFORCE_URL,
            webhook_url=f"{ingest_url}/webhooks/salesforce",
            webhook_client=to_ingest,
            shuffle_webhooks=False,  # a conversion's two messages stay in order: same seed, same counts
            seed=options.seed,
        )
        clients = await _clients(stack, hubspot, salesforce)
        ingest = options.ingest.model_copy(
            update={
                "hubspot_client_secret": [SecretStr(HUBSPOT_SECRET)],
                "salesforce_org_ids": [salesforce.organization_id],
            }
        )
        services = compose.Services(
            bus=bus,
            engine=engine,
            topics=topics,
            funnel=funnel,
            ingest=ingest,
            sync=options.sync,
            metrics=options.metrics,
            api_tokens=[options.api_token],
        )
        endpoints = compose.endpoints(services, names=("ingest", "sync", "metrics"), clients=clients)
        stop = asyncio.Event()
        server = asyncio.create_task(serving.serve(endpoints, stop=stop))
        urls = {e.name: f"http://{e.host}:{e.port}" for e in endpoints}
        await _wait_ready(urls.values(), server)
        try:
            yield Demo(hubspot, salesforce, Progress(), urls, stop, duplicating), server
        finally:
            stop.set()
            await asyncio.gather(server, return_exceptions=True)
            await hubspot.aclose()
            await salesforce.aclose()


@asynccontextmanager
async def remote_world(
    options: DemoOptions, *, against: str, bi_url: str, simulator_host: str, ports: tuple[int, int]
) -> AsyncIterator[tuple[Demo, asyncio.Task[None]]]:
    """Play against a running stack: serve the simulators over HTTP for its sync, post to its ingest."""
    secrets = [s.get_secret_value() for s in options.ingest.hubspot_client_secret]
    token, client_secret = options.sync.hubspot_access_token, options.sync.salesforce_client_secret
    if not (
        secrets
        and token
        and options.sync.salesforce_client_id
        and client_secret
        and options.ingest.salesforce_org_ids
    ):
        raise ValueError(
            "--against needs the stack's ONEFUNNEL_HUBSPOT_CLIENT_SECRET, ONEFUNNEL_HUBSPOT_ACCESS_TOKEN, "
            "ONEFUNNEL_SALESFORCE_ORG_IDS, ONEFUNNEL_SALESFORCE_CLIENT_ID and "
            "ONEFUNNEL_SALESFORCE_CLIENT_SECRET"
        )
    async with AsyncExitStack() as stack:
        duplicating = DuplicatingTransport(
            httpx.AsyncHTTPTransport(), rng=random.Random(options.seed), share=0.03
        )
        to_ingest = await stack.enter_async_context(httpx.AsyncClient(transport=duplicating, timeout=10.0))
        hubspot = HubSpotFake(
            access_tokens=[token.get_secret_value()],
            webhook_url=f"{against}/webhooks/hubspot",
            client_secret=secrets[0],
            webhook_client=to_ingest,
            shuffle_webhooks=True,
            seed=options.seed,
        )
        salesforce = FakeSalesforce(
            client_id=options.sync.salesforce_client_id,
            client_secret=client_secret.get_secret_value(),
            organization_id=options.ingest.salesforce_org_ids[0],
            instance_url=f"http://{simulator_host}:{ports[1]}",
            webhook_url=f"{against}/webhooks/salesforce",
            webhook_client=to_ingest,
            seed=options.seed,
        )
        stop = asyncio.Event()
        simulators = [
            serving.Endpoint("hubspot-simulator", hubspot.app, simulator_host, ports[0]),
            serving.Endpoint("salesforce-simulator", salesforce.app, simulator_host, ports[1]),
        ]
        server = asyncio.create_task(serving.serve(simulators, stop=stop))
        await _wait_ready([against, bi_url], server)
        try:
            yield (
                Demo(
                    hubspot, salesforce, Progress(), {"ingest": against, "metrics": bi_url}, stop, duplicating
                ),
                server,
            )
        finally:
            stop.set()
            await asyncio.gather(server, return_exceptions=True)
            await hubspot.aclose()
            await salesforce.aclose()


async def _clients(
    stack: AsyncExitStack, hubspot: HubSpotFake, salesforce: FakeSalesforce
) -> list[PlatformClient]:
    to_hubspot = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=hubspot.app))
    )
    to_salesforce = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=salesforce.app))
    )
    return [
        HubSpotClient(
            http=to_hubspot,
            access_token=HUBSPOT_TOKEN,
            throttle=Throttle(per_second=50, burst=50, concurrency=10),
            initial_wait=0.2,
            max_wait=2.0,
        ),
        SalesforceClient(
            http=to_salesforce,
            client_id=salesforce.client_id,
            client_secret=salesforce.client_secret,
            login_url=SALESFORCE_URL,
            throttle=Throttle(per_second=50, burst=50, concurrency=10),
            initial_wait=0.2,
            max_wait=2.0,
            limit_wait=1.0,
        ),
    ]


async def _wait_ready(urls: Iterable[str], server: asyncio.Task[None]) -> None:
    async with httpx.AsyncClient(timeout=2.0) as http, asyncio.timeout(120):
        for url in urls:
            while True:
                if server.done():
                    await server  # raises the start-up failure (a port in use, ...)
                try:
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)


async def drive(demo: Demo, options: DemoOptions) -> None:
    """Play the planned journeys, with an occasional HubSpot rate-limit burst."""
    journeys = plan(
        leads=max(1, round(options.rate * options.duration)),
        seed=options.seed,
        pace=max(0.5, options.duration / 15),
    )
    rng = random.Random(options.seed)

    async def rate_limits() -> None:
        while True:
            await asyncio.sleep(rng.uniform(5, 15))
            demo.hubspot.inject_rate_limit(count=3, retry_after=0.5)

    storms = asyncio.create_task(rate_limits())
    try:
        await run_traffic(
            journeys,
            hubspot=demo.hubspot,
            salesforce=demo.salesforce,
            rate=options.rate,
            progress=demo.progress,
        )
    finally:
        storms.cancel()
