"""The processes a benchmark run starts, and stops again whatever happens; CPU use from /proc."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_TICKS = os.sysconf("SC_CLK_TCK")


class Processes:
    """Start servers and the broker in sessions of their own (Ctrl-C reaches only the benchmark,
    which then stops them in order); on exit stop every one still running."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._running: list[subprocess.Popen[bytes]] = []
        self._kafka: tuple[Path, Path] | None = None  # script, data directory
        self._logs: dict[int, Path] = {}

    def __enter__(self) -> "Processes":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for process in reversed(self._running):
            self.stop(process)
        if self._kafka is not None:
            script, directory = self._kafka
            self._kafka = None
            subprocess.run(["/bin/bash", str(script), "stop", str(directory)], timeout=60, check=False)  # noqa: S603

    def start_kafka(self, script: Path) -> tuple[str, int]:
        """Start a single-node broker in the work directory; return its address and pid."""
        directory, port = self.work / "kafka", free_port()
        self._kafka = (script, directory)
        print(f"starting Kafka on 127.0.0.1:{port} ...", flush=True)
        subprocess.run(  # noqa: S603
            ["/bin/bash", str(script), "start", str(directory), str(port)],
            timeout=300,
            check=True,
            start_new_session=True,
        )
        return f"127.0.0.1:{port}", int((directory / "broker.pid").read_text())

    def start_python(self, name: str, argv: list[str], *, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Run `python argv` with a clean ONEFUNNEL_* environment; its output goes to a log file."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ONEFUNNEL_")}
        log = (self.work / f"{name}.log").open("wb")
        process = subprocess.Popen(  # noqa: S603  # our own script, our own arguments
            [sys.executable, *argv],
            env={**clean, **env},
            cwd=self.work,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._running.append(process)
        self._logs[process.pid] = self.work / f"{name}.log"
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process in self._running:
            self._running.remove(process)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)

    def wait_until_answers(
        self, process: subprocess.Popen[bytes], *, port: int, path: str, timeout: float = 60
    ) -> None:
        """Wait until GET `path` answers 200; fail with the server's log if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", path)
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.2)
        log = self._logs[process.pid].read_text(errors="replace")[-3000:]
        raise SystemExit(f"server on port {port} did not answer {path} with 200:\n{log}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / _TICKS


def wait_for_quiet(*, below: float, timeout: float) -> float:
    """Wait until the machine's busy cores (averaged over a second) fall below `below`, at most
    `timeout` seconds; other work on a shared machine would otherwise be measured as ours."""
    deadline = time.monotonic() + timeout
    while True:
        before = machine_busy()
        time.sleep(1.0)
        busy = machine_busy() - before
        if busy < below or time.monotonic() >= deadline:
            return busy
