"""PostgreSQL, Kafka and `onefunnel metrics` processes for the metrics benchmark, always stopped.

The servers come from deploy/ in temporary directories and sessions of their own, so a Ctrl-C
reaches only the benchmark, which then stops them. deploy/postgres/postgres.sh runs PostgreSQL
with fsync and synchronous_commit off (a test server): commits do not wait for a disk flush.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
KAFKA = REPO / "deploy/kafka/kafka.sh"
POSTGRES = REPO / "deploy/postgres/postgres.sh"
ONEFUNNEL = REPO / ".venv/bin/onefunnel"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _script(*args: str | Path) -> None:
    print(f"  $ {' '.join(str(a) for a in args)}", flush=True)
    subprocess.run(  # noqa: S603  # our own deploy scripts
        ["/bin/bash", *map(str, args)], timeout=300, check=True, start_new_session=True
    )


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Yield the URL of a fresh server's `postgres` database; stop it and delete its data after."""
    directory = Path(tempfile.mkdtemp(prefix="onefunnel-bench-metrics-pg-"))
    try:
        port = free_port()
        _script(POSTGRES, "start", directory, str(port))
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            _script(POSTGRES, "stop", directory)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    """Yield the bootstrap address of a fresh single-node broker; stop it and delete its data after."""
    directory = Path(tempfile.mkdtemp(prefix="onefunnel-bench-metrics-kafka-"))
    try:
        port = free_port()
        _script(KAFKA, "start", directory, str(port))
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            _script(KAFKA, "stop", directory)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def metrics_service(*, database_url: str, bootstrap: str, topic: str, token: str) -> Iterator[str]:
    """Run the real `onefunnel metrics` (one uvicorn worker) until ready; yield its base URL."""
    port = free_port()
    environment = {
        **os.environ,
        "ONEFUNNEL_BUS": "kafka",
        "ONEFUNNEL_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ONEFUNNEL_DATABASE_URL": database_url,
        "ONEFUNNEL_TOPIC_STAGE_CHANGES": topic,
        "ONEFUNNEL_METRICS_PORT": str(port),
        "ONEFUNNEL_METRICS_CONSUMER_GROUP": f"bench-{topic}",
        "ONEFUNNEL_API_TOKENS": token,
        "ONEFUNNEL_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(  # noqa: S603  # the project's own entry point
        [str(ONEFUNNEL), "metrics"], env=environment, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"onefunnel metrics exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("onefunnel metrics was not ready within 120 s")
        yield base
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
