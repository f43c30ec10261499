"""Kafka and PostgreSQL for the sync benchmark: started in temporary directories, always stopped.

Both are started from deploy/ in sessions of their own, so a Ctrl-C reaches only the benchmark,
which then stops them. deploy/postgres/postgres.sh runs PostgreSQL as tests want it (fsync and
synchronous_commit off); the benchmark restarts it with pg_stat_statements loaded (to count the
statements sync sends) and, with `durable=True`, with both on, as production runs it, so every
commit waits for its WAL flush.
"""

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KAFKA = REPO / "deploy/kafka/kafka.sh"
POSTGRES = REPO / "deploy/postgres/postgres.sh"


@dataclass(frozen=True)
class Infra:
    bootstrap: str
    database_url: str  # postgresql://, a fresh database of this run
    kafka_pid: int | None  # None when not started here
    postgres_dir: Path | None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _free_port_pair() -> int:
    """A free port whose successor is free too: kafka.sh puts the controller on port + 1."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("found no two free consecutive ports on 127.0.0.1")


def _script(*args: str | Path) -> None:
    print(f"  $ {' '.join(str(a) for a in args)}", flush=True)
    subprocess.run(  # noqa: S603  # our own deploy scripts
        ["/bin/bash", *map(str, args)], timeout=300, check=True, start_new_session=True
    )


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _restart(directory: Path, port: int, *, durable: bool) -> None:
    """Restart the test server with our settings (the command line beats ALTER SYSTEM)."""
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
        " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"
    )
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off"
    argv = [pg_ctl, "-D", f"{directory}/data", "-l", f"{directory}/server.log", "-w", "-m", "fast"]
    subprocess.run(  # noqa: S603
        _as_owner([*argv, "restart", "-o", options]),
        timeout=120,
        check=True,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )


async def _create_database(server_url: str) -> str:
    import asyncpg

    name = f"bench_sync_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        settings = await connection.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')"
        )
        print("  postgres: " + ", ".join(f"{r['name']}={r['setting']}" for r in settings), flush=True)
    finally:
        await connection.close()
    database = server_url.rsplit("/", 1)[0] + f"/{name}"
    connection = await asyncpg.connect(database)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except asyncpg.PostgresError as error:  # a server of someone else's without the library loaded
        print(f"  postgres: no statement counts ({error})", flush=True)
    finally:
        await connection.close()
    return database


@contextlib.contextmanager
def infrastructure(*, bootstrap: str | None, database_url: str | None, durable: bool) -> Iterator[Infra]:
    """Yield a broker and a fresh database; stop what was started here, whatever happens."""
    # Separate temporary directories: postgres.sh hands its own to the postgres user.
    kafka_dir = Path(tempfile.mkdtemp(prefix="onefunnel-bench-kafka-"))
    postgres_dir = Path(tempfile.mkdtemp(prefix="onefunnel-bench-postgres-"))
    kafka_started = postgres_started = False
    try:
        if bootstrap is None:
            port = _free_port_pair()
            kafka_started = True
            _script(KAFKA, "start", kafka_dir, str(port))
            bootstrap = f"127.0.0.1:{port}"
        if database_url is None:
            port = free_port()
            postgres_started = True
            _script(POSTGRES, "start", postgres_dir, str(port))
            _restart(postgres_dir, port, durable=durable)
            database_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        database = asyncio.run(_create_database(database_url))
        kafka_pid = int((kafka_dir / "broker.pid").read_text()) if kafka_started else None
        yield Infra(
            bootstrap=bootstrap,
            database_url=database,
            kafka_pid=kafka_pid,
            postgres_dir=postgres_dir if postgres_started else None,
        )
    finally:
        print("stopping what the benchmark started ...", flush=True)
        if postgres_started:
            with contextlib.suppress(subprocess.SubprocessError):
                _script(POSTGRES, "stop", postgres_dir)
        if kafka_started:
            with contextlib.suppress(subprocess.SubprocessError):
                _script(KAFKA, "stop", kafka_dir)
        for directory in (kafka_dir, postgres_dir):
            shutil.rmtree(directory, ignore_errors=True)
