"""One measurement's setting: topics of its own, a bus to publish on, and one `onefunnel sync` process.

Each phase gets fresh topics and a fresh consumer group (and so a fresh process, whose counters
start at zero); the database, the fakes and the people in them carry over.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sync_events import Walks
from sync_fakes import HUBSPOT_TOKEN, Fakes
from sync_infra import Infra, free_port
from sync_process import SyncProcess

from onefunnel.shared.bus import Bus, open_bus
from onefunnel.shared.settings import BusKind, BusSettings, TopicSettings


@dataclass(frozen=True)
class Options:
    api_rate: float  # sync's client-side limit, calls/s per platform
    log_level: str
    work: Path  # logs and profiles


@dataclass
class Stage:
    name: str
    bus: Bus
    topic: str
    walks: Walks
    db: asyncpg.Connection
    wave: int
    infra: Infra
    _env: dict[str, str]
    _options: Options
    sync: SyncProcess | None = None

    async def start_sync(self, *, profile: str | None = None) -> SyncProcess:
        """Start the one sync process and wait until it is ready."""
        port = free_port()
        log = self._options.work / f"sync-{self.name}.log"
        self.sync = SyncProcess(
            env={**self._env, "ONEFUNNEL_SYNC_PORT": str(port)},
            port=port,
            log=log,
            profile=profile,
            out=self.profile_path(profile),
        )
        print(f"starting onefunnel sync on 127.0.0.1:{port} (log: {log}) ...", flush=True)
        await self.sync.wait_ready()
        return self.sync

    def profile_path(self, profile: str | None) -> Path:
        return self._options.work / f"sync-{self.name}.{'txt' if profile == 'pyinstrument' else 'prof'}"


@asynccontextmanager
async def stage(
    name: str,
    *,
    infra: Infra,
    fakes: Fakes,
    walks: Walks,
    db: asyncpg.Connection,
    partitions: int,
    wave: int,
    options: Options,
) -> AsyncIterator[Stage]:
    """Fresh topics with `partitions` partitions; the sync process, once started, is stopped on exit."""
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    topics = TopicSettings(
        topic_source_events=f"bench-source-{suffix}",
        topic_stage_changes=f"bench-stages-{suffix}",
        topic_dead_letters=f"bench-dead-{suffix}",
    )
    settings = BusSettings(
        bus=BusKind.KAFKA,
        kafka_bootstrap_servers=infra.bootstrap,
        kafka_partitions=partitions,
        publish_timeout=30.0,
    )
    env = _sync_env(
        infra, topics, fakes, partitions=partitions, group=f"bench-sync-{suffix}", options=options
    )
    async with open_bus(settings, topics=topics.all) as bus:
        current = Stage(name, bus, topics.topic_source_events, walks, db, wave, infra, env, options)
        try:
            yield current
        finally:
            if current.sync is not None:
                await asyncio.to_thread(current.sync.stop)


def _sync_env(
    infra: Infra, topics: TopicSettings, fakes: Fakes, *, partitions: int, group: str, options: Options
) -> dict[str, str]:
    return {
        "ONEFUNNEL_BUS": "kafka",
        "ONEFUNNEL_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "ONEFUNNEL_KAFKA_PARTITIONS": str(partitions),
        "ONEFUNNEL_DATABASE_URL": infra.database_url,
        "ONEFUNNEL_TOPIC_SOURCE_EVENTS": topics.topic_source_events,
        "ONEFUNNEL_TOPIC_STAGE_CHANGES": topics.topic_stage_changes,
        "ONEFUNNEL_TOPIC_DEAD_LETTERS": topics.topic_dead_letters,
        "ONEFUNNEL_SYNC_CONSUMER_GROUP": group,
        "ONEFUNNEL_LOG_LEVEL": options.log_level,
        "ONEFUNNEL_HUBSPOT_ACCESS_TOKEN": HUBSPOT_TOKEN,
        "ONEFUNNEL_HUBSPOT_BASE_URL": fakes.hubspot_url,
        "ONEFUNNEL_HUBSPOT_REQUESTS_PER_SECOND": str(options.api_rate),
        "ONEFUNNEL_SALESFORCE_CLIENT_ID": fakes.salesforce.client_id,
        "ONEFUNNEL_SALESFORCE_CLIENT_SECRET": fakes.salesforce.client_secret,
        "ONEFUNNEL_SALESFORCE_LOGIN_URL": fakes.salesforce_url,
        "ONEFUNNEL_SALESFORCE_REQUESTS_PER_SECOND": str(options.api_rate),
        # The default "v62.0" meets a client that prefixes "v" itself: /services/data/vv62.0 is a 404.
        "ONEFUNNEL_SALESFORCE_API_VERSION": "62.0",
    }
