"""Session fixtures that start the real infrastructure the suite runs against.

Kafka, PostgreSQL and Prometheus are started from the scripts in deploy/ on free loopback ports,
once per session and only when a test asks for them. To reuse a running server instead, set
ONEFUNNEL_TEST_KAFKA_BOOTSTRAP_SERVERS or ONEFUNNEL_TEST_DATABASE_URL. A server that cannot be
started fails the tests that need it; nothing is skipped.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run_script(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}", pytrace=False)


@dataclass
class KafkaBroker:
    """A real single-node KRaft broker; tests may stop and start it (same data, same port)."""

    bootstrap_servers: str
    directory: Path | None  # None when reusing a broker we did not start
    port: int

    def stop(self) -> None:
        assert self.directory is not None, "cannot stop a broker this session did not start"
        _run_script(str(REPO / "deploy/kafka/kafka.sh"), "stop", str(self.directory))

    def start(self) -> None:
        assert self.directory is not None, "cannot start a broker this session did not start"
        _run_script(str(REPO / "deploy/kafka/kafka.sh"), "start", str(self.directory), str(self.port))


@contextmanager
def own_kafka_broker() -> Iterator[KafkaBroker]:
    """Start a broker of our own in a temporary directory; stop it and delete its data after."""
    directory = Path(tempfile.mkdtemp(prefix="onefunnel-kafka-"))
    port = free_port()
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{port}", directory=directory, port=port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    existing = os.environ.get("ONEFUNNEL_TEST_KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield KafkaBroker(bootstrap_servers=existing, directory=None, port=0)
        return
    with own_kafka_broker() as broker:
        yield broker


@pytest.fixture
def stoppable_kafka() -> Iterator[KafkaBroker]:
    """A broker of the test's own, for a test that stops and restarts it."""
    with own_kafka_broker() as broker:
        yield broker


@dataclass
class PostgresServer:
    """A real PostgreSQL server; tests may stop and start it (same data, same port)."""

    url: str  # its `postgres` database
    directory: Path
    port: int

    def stop(self) -> None:
        _run_script(str(REPO / "deploy/postgres/postgres.sh"), "stop", str(self.directory))

    def start(self) -> None:
        _run_script(str(REPO / "deploy/postgres/postgres.sh"), "start", str(self.directory), str(self.port))


@contextmanager
def own_postgres_server() -> Iterator[PostgresServer]:
    """Start a server of our own in a temporary directory; stop it and delete its data after."""
    directory = Path(tempfile.mkdtemp(prefix="onefunnel-postgres-"))
    port = free_port()
    server = PostgresServer(
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres", directory=directory, port=port
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server's `postgres` database (tests create their own databases)."""
    existing = os.environ.get("ONEFUNNEL_TEST_DATABASE_URL")
    if existing:
        yield existing
        return
    with own_postgres_server() as server:
        yield server.url


@pytest.fixture
async def postgres_url(postgres_server_url: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server, for one test."""
    return await create_database(postgres_server_url)


async def create_database(server_url: str) -> str:
    """Create an empty database on the server; its URL."""
    import asyncpg

    name = f"test_{uuid.uuid4().hex[:12]}"
    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind onefunnel supports: the same test runs on both."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path}/onefunnel.sqlite3"
