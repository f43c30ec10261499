"""A whole onefunnel world for sync tests: the HubSpot and Salesforce fakes, ingest, real Kafka,
real PostgreSQL and the sync service with its consumer, outbox relay and write-back workers.

The fakes' webhooks go through the real ingest app to Kafka; sync writes back to the fakes through
the real clients. Nothing of onefunnel's own is faked.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from onefunnel.ingest.app import create_app as create_ingest_app
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, open_bus
from onefunnel.shared.database import create_engine
from onefunnel.shared.events import LeadStageChanged
from onefunnel.shared.funnel import Funnel, load_funnel
from onefunnel.shared.settings import BusKind, BusSettings, DatabaseSettings, TopicSettings
from onefunnel.shared.stages import Stage
from onefunnel.simulators.hubspot import HubSpotFake
from onefunnel.simulators.salesforce import FakeSalesforce
from onefunnel.sync.app import create_app as create_sync_app
from onefunnel.sync.identity import normalized_email
from onefunnel.sync.platforms.base import PlatformClient
from onefunnel.sync.platforms.hubspot import HubSpotClient
from onefunnel.sync.platforms.salesforce import SalesforceClient
from onefunnel.sync.platforms.throttle import Throttle
from onefunnel.sync.tables import InboxRow, LeadRow, OutboxRow, ParkedEventRow, WriteRow
from tests.ingest import deliveries

SALESFORCE_URL = "https://fake.my.salesforce.com"
HUBSPOT_TOKEN = "pat-na1-fake-token"
API_TOKEN = "sync-test-api-token"


class Backlog:
    """Events on the source topic that sync's consumer group has not committed yet.

    The consumer commits a batch's offsets only after its transaction: nothing in the database
    changes while a long batch is being handled, but this stays above zero until it is done.
    """

    def __init__(self, *, bootstrap_servers: str, group: str, topic: str, partitions: int) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        self._ends = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        self._group = group
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    async def __aenter__(self) -> "Backlog":
        await self._admin.start()
        await self._ends.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._ends.stop()
        await self._admin.close()

    async def size(self) -> int:
        committed = await self._admin.list_consumer_group_offsets(self._group)
        ends = await self._ends.end_offsets(self._partitions)
        done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        return sum(end - done.get(tp, 0) for tp, end in ends.items())


@dataclass
class World:
    hubspot: HubSpotFake
    salesforce: FakeSalesforce
    bus: Bus
    topics: TopicSettings
    sessions: async_sessionmaker[AsyncSession]
    funnel: Funnel
    ingest: httpx.AsyncClient
    sync: httpx.AsyncClient
    backlog: Backlog

    async def settle(self, *, within: float = 90.0) -> None:
        """Wait until webhooks, events, writes and the outbox are all done and stay done."""
        async with asyncio.timeout(within):
            last, quiet = None, 0
            while quiet < 4:
                await self.hubspot.webhooks_idle()
                await self.salesforce.webhooks_idle()
                async with self.sessions() as session:
                    now = (
                        await _count(session, InboxRow),
                        await _count(session, WriteRow, col(WriteRow.status) == "pending"),
                        await _count(session, OutboxRow, col(OutboxRow.published_at).is_(None)),
                        await _count(session, ParkedEventRow),
                        len(self.hubspot.calls),
                        len(self.salesforce.calls),
                    )
                busy = now[1] > 0 or now[2] > 0 or await self.backlog.size() > 0
                quiet = quiet + 1 if now == last and not busy else 0
                last = now
                await asyncio.sleep(0.4)

    async def stage(self, email: str) -> Stage | None:
        async with self.sessions() as session:
            lead = await session.scalar(select(LeadRow).where(col(LeadRow.email) == normalized_email(email)))
        assert lead is not None, "no canonical lead with that email"
        return Stage(lead.stage) if lead.stage else None

    async def lead(self, email: str) -> LeadRow:
        async with self.sessions() as session:
            lead = await session.scalar(select(LeadRow).where(col(LeadRow.email) == normalized_email(email)))
        assert lead is not None, "no canonical lead with that email"
        return lead

    async def transitions(self) -> list[LeadStageChanged]:
        """Every LeadStageChanged published so far, in order per lead."""
        found: list[LeadStageChanged] = []
        async with self.bus.subscribe(
            [self.topics.topic_stage_changes], group=f"t-{uuid.uuid4().hex}"
        ) as sub:
            async for batch in sub.batches(max_wait=1.0):
                if not batch:
                    return found
                found.extend(e for e in map(envelope.decode, batch) if isinstance(e, LeadStageChanged))
        return found

    def hubspot_stage(self, email: str) -> str:
        contact = next(c for c in self.hubspot.snapshot().values() if c.get("email") == email)
        return contact.get("lifecyclestage", "")

    def salesforce_lead(self, email: str) -> Mapping[str, object]:
        return next(r for r in self.salesforce.snapshot()["Lead"].values() if r.get("Email") == email)


async def _count(session: AsyncSession, table: type, *where: object) -> int:
    query = select(func.count()).select_from(table)
    for condition in where:
        query = query.where(condition)  # type: ignore[arg-type]
    return int(await session.scalar(query) or 0)


@asynccontextmanager
async def world(
    *,
    bootstrap_servers: str,
    database_url: str,
    shuffle: bool = False,
    seed: int = 0,
    propagate_deletes: bool = False,
) -> AsyncIterator[World]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        topic_source_events=f"source-{suffix}",
        topic_stage_changes=f"stages-{suffix}",
        topic_dead_letters=f"dead-{suffix}",
    )
    funnel = load_funnel()
    bus_settings = BusSettings(
        bus=BusKind.KAFKA, kafka_bootstrap_servers=bootstrap_servers, kafka_partitions=3, publish_timeout=10.0
    )
    engine = create_engine(DatabaseSettings(database_url=database_url))
    async with open_bus(bus_settings, topics=topics.all) as bus:
        ingest_app = create_ingest_app(
            bus=bus, settings=deliveries.settings(), topics=topics, mapping=funnel.stage_mapping
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingest_app), base_url=deliveries.BASE_URL
        ) as to_ingest:
            hubspot = HubSpotFake(
                access_tokens=[HUBSPOT_TOKEN],
                webhook_url=f"{deliveries.BASE_URL}/webhooks/hubspot",
                client_secret=deliveries.HUBSPOT_SECRET,
                webhook_client=to_ingest,
                shuffle_webhooks=shuffle,
                seed=seed,
                rate_limit_max=100_000,
            )
            salesforce = FakeSalesforce(
                instance_url=SALESFORCE_URL,
                organization_id=deliveries.SALESFORCE_ORG,
                webhook_url=f"{deliveries.BASE_URL}/webhooks/salesforce",
                webhook_client=to_ingest,
                shuffle_webhooks=shuffle,
                api_limit=1_000_000,
                seed=seed,
            )
            async with (
                httpx.AsyncClient(transport=httpx.ASGITransport(app=hubspot.app)) as to_hubspot,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=salesforce.app)) as to_salesforce,
            ):
                clients: list[PlatformClient] = [
                    HubSpotClient(
                        http=to_hubspot,
                        access_token=HUBSPOT_TOKEN,
                        throttle=Throttle(per_second=2000, burst=200, concurrency=20),
                        attempts=6,
                        initial_wait=0.01,
                        max_wait=0.2,
                    ),
                    SalesforceClient(
                        http=to_salesforce,
                        client_id=salesforce.client_id,
                        client_secret=salesforce.client_secret,
                        login_url=SALESFORCE_URL,
                        throttle=Throttle(per_second=2000, burst=200, concurrency=20),
                        limit_wait=0.05,
                        attempts=6,
                        initial_wait=0.01,
                        max_wait=0.2,
                    ),
                ]
                sync_app = create_sync_app(
                    bus=bus,
                    engine=engine,
                    topics=topics,
                    funnel=funnel,
                    clients=clients,
                    consumer_group=f"sync-{suffix}",
                    api_tokens=[API_TOKEN],
                    propagate_deletes=propagate_deletes,
                )
                backlog = Backlog(
                    bootstrap_servers=bootstrap_servers,
                    group=f"sync-{suffix}",
                    topic=topics.topic_source_events,
                    partitions=bus_settings.kafka_partitions,
                )
                async with (
                    sync_app.router.lifespan_context(sync_app),
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=sync_app), base_url="http://sync"
                    ) as to_sync,
                    backlog,
                ):
                    yield World(
                        hubspot=hubspot,
                        salesforce=salesforce,
                        bus=bus,
                        topics=topics,
                        sessions=async_sessionmaker(engine, expire_on_commit=False),
                        funnel=funnel,
                        ingest=to_ingest,
                        sync=to_sync,
                        backlog=backlog,
                    )
                await hubspot.aclose()
                await salesforce.aclose()
    await engine.dispose()
