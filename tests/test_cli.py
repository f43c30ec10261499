"""The `onefunnel` command as an operator meets it: start, health, readiness, stop, bad config."""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.sync.tables import WriteRow
from tests.conftest import KafkaBroker, free_port


@contextmanager
def onefunnel(command: str, *, cwd: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "onefunnel.cli", command],
        cwd=cwd,
        env={**os.environ, "ONEFUNNEL_LOG_FORMAT": "text", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_for(url: str, *, status: int = 200, within: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + within
    last: httpx.Response | Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2.0)
            if last.status_code == status:
                return last
        except httpx.TransportError as error:
            last = error
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer {status} within {within} s (last: {last!r})")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    return output


def test_run_starts_all_three_services_on_the_embedded_defaults_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("ingest", "sync", "metrics")}
    env = {f"ONEFUNNEL_{name.upper()}_PORT": str(port) for name, port in ports.items()}

    with onefunnel("run", cwd=tmp_path, env=env) as process:
        for port in ports.values():
            assert wait_for(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
            assert wait_for(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
            assert (
                httpx.get(f"http://127.0.0.1:{port}/metrics").headers["content-type"].startswith("text/plain")
            )
        output = stop(process)

    assert "Ctrl-C stops" in output
    assert (tmp_path / ".onefunnel" / "bus.sqlite3").is_file()
    assert (tmp_path / ".onefunnel" / "onefunnel.sqlite3").is_file()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ONEFUNNEL_INGEST_PORT", "eighty"),
        ("ONEFUNNEL_BUS", "rabbitmq"),
        ("ONEFUNNEL_DATABASE_URL", "mysql://x/y"),
    ],
)
def test_bad_configuration_fails_at_start_with_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onefunnel.cli", "ingest"],
        cwd=tmp_path,
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"onefunnel: invalid configuration: {variable}: "), (
        result.stderr
    )
    assert value not in lines[0]  # values may be secrets


@pytest.mark.kafka
def test_a_service_runs_alone_on_kafka_and_postgresql(
    tmp_path: Path, kafka: KafkaBroker, postgres_server_url: str
) -> None:
    port = free_port()
    env = {
        "ONEFUNNEL_BUS": "kafka",
        "ONEFUNNEL_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ONEFUNNEL_DATABASE_URL": postgres_server_url,
        "ONEFUNNEL_SYNC_PORT": str(port),
    }
    with onefunnel("sync", cwd=tmp_path, env=env) as process:
        ready = wait_for(f"http://127.0.0.1:{port}/readyz").json()
        stop(process)

    assert ready == {"status": "ready", "checks": {"bus": "ok", "database": "ok"}}


def test_ingest_starts_without_its_broker_and_reports_not_ready(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "ONEFUNNEL_BUS": "kafka",
        "ONEFUNNEL_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "ONEFUNNEL_PUBLISH_TIMEOUT": "0.5",
        "ONEFUNNEL_INGEST_PORT": str(port),
    }
    with onefunnel("ingest", cwd=tmp_path, env=env) as process:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        not_ready = wait_for(f"http://127.0.0.1:{port}/readyz", status=503)
        stop(process)

    assert not_ready.json()["checks"] == {"bus": "failing"}


def test_replay_queues_a_refused_write_again(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/onefunnel.sqlite3"

    async def with_failed_write() -> None:
        engine = create_engine(DatabaseSettings(database_url=database))
        await migrate(engine, service="sync")
        now = datetime.now(UTC)
        async with async_sessionmaker(engine)() as session, session.begin():
            session.add(
                WriteRow(
                    lead_id=uuid.uuid4(),
                    system="hubspot",
                    stage="sal",
                    value="salesqualifiedlead",
                    status="failed",
                    next_attempt_at=now,
                    cause_event_id=uuid.uuid4(),
                    occurred_at=now,
                    created_at=now,
                    error_code="VALIDATION_ERROR",
                )
            )
        await engine.dispose()

    asyncio.run(with_failed_write())
    result = subprocess.run(
        [sys.executable, "-m", "onefunnel.cli", "replay"],
        cwd=tmp_path,
        env={**os.environ, "ONEFUNNEL_DATABASE_URL": database},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "1 failed write(s) queued again" in result.stderr


def test_ingest_refuses_to_start_with_bodies_larger_than_kafka_messages(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onefunnel.cli", "ingest"],
        cwd=tmp_path,
        env={**os.environ, "ONEFUNNEL_BUS": "kafka", "ONEFUNNEL_MAX_BODY_BYTES": str(4 * 1024 * 1024)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "onefunnel: invalid configuration: ONEFUNNEL_MAX_BODY_BYTES: must be at most "
        "ONEFUNNEL_KAFKA_MAX_MESSAGE_BYTES - 65536 (4128768) on Kafka"
    ]
