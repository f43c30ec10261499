"""The one sync process under test (`onefunnel sync`), its /metrics, and CPU use from /proc."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

PROFILERS = ("cprofile", "pyinstrument")
# cProfile on the process's CPU clock, not the wall clock: time spent waiting (for PostgreSQL, for a
# core on a busy machine) is not charged to whatever function happened to be waiting.
_CPROFILE = """
import cProfile, runpy, sys, time
profile = cProfile.Profile(time.process_time)
sys.argv = ["onefunnel", "sync"]
profile.enable()
try:
    runpy.run_module("onefunnel.cli", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats({out!r})
"""


class SyncProcess:
    """`python -m onefunnel.cli sync` with the given ONEFUNNEL_* environment, optionally profiled."""

    def __init__(
        self, *, env: Mapping[str, str], port: int, log: Path, profile: str | None, out: Path
    ) -> None:
        command = ["-m", "onefunnel.cli", "sync"]
        if profile == "cprofile":
            command = ["-c", _CPROFILE.format(out=str(out))]
        elif profile == "pyinstrument":
            command = [
                "-m",
                "pyinstrument",
                "-o",
                str(out),
                "-r",
                "text",
                "-p",
                "time=percent_of_total",
                *command,
            ]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ONEFUNNEL_")}
        self.log, self._base = log, f"http://127.0.0.1:{port}"
        with log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603  # our own command line
                [sys.executable, *command],
                env={**clean, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops this process
            )

    async def wait_ready(self, *, within: float = 120.0) -> None:
        """Wait until /readyz answers 200 (bus, database and both platforms answer)."""
        async with httpx.AsyncClient(base_url=self._base, timeout=3) as http:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise SystemExit(f"sync exited ({self.process.returncode}):\n{self.tail()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise SystemExit(f"sync did not become ready within {within:.0f} s:\n{self.tail()}")

    async def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The process's samples by name: [(labels, value), ...]."""
        async with httpx.AsyncClient(base_url=self._base, timeout=5) as http:
            answer = await http.get("/metrics")
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return samples

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:]

    def stop(self) -> None:
        """SIGTERM (the service stops its loops and, when profiled, the profiler writes its file)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
