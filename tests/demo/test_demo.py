"""`onefunnel demo`: the whole loop runs, what it shows is what the BI API says, and a seed repeats."""

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from onefunnel.demo.run import Demo, DemoOptions, demo_world, drive, remote_world
from onefunnel.demo.snapshot import fetch_snapshot
from onefunnel.demo.view import Snapshot
from onefunnel.ingest.settings import IngestSettings
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.shared.stages import Stage
from onefunnel.sync.settings import SyncSettings
from tests.conftest import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")
TOKEN = "demo-test-token"


def options(state: Path, *, seed: int) -> DemoOptions:
    return DemoOptions(
        duration=6,
        rate=4,
        seed=seed,
        state_dir=state,
        api_token=TOKEN,
        ingest=IngestSettings(ingest_port=free_port()),
        sync=SyncSettings(sync_port=free_port()),
        metrics=MetricsSettings(metrics_port=free_port()),
    )


async def settled(demo: Demo, chosen: DemoOptions, *, since: datetime) -> Snapshot:
    """The snapshot once the last webhooks and write-backs have landed: unchanged for 3 s in a row."""
    last, quiet = None, 0
    async with asyncio.timeout(90):
        while quiet < 3:
            await asyncio.sleep(1)
            shown = await fetch_snapshot(demo, chosen, since=since)
            now = ({s: line.entries for s, line in shown.stages.items()}, shown.campaigns)
            quiet = quiet + 1 if now == last else 0
            last = now
    return shown


async def play(chosen: DemoOptions) -> tuple[Snapshot, dict[str, Any], dict[str, Any], Any]:
    """Run a whole demo: what it would show, the BI API's answers for the same window, sync's failures.

    The services' Prometheus registries are per process, and other tests in this one may have
    counted write failures and dead letters before: the snapshot's are this demo's own.
    """
    since = datetime.now(UTC)
    async with demo_world(chosen) as (demo, _server):
        before = await fetch_snapshot(demo, chosen, since=since)
        async with asyncio.timeout(120):
            await drive(demo, chosen)
        shown = await settled(demo, chosen, since=since)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=demo.urls["metrics"], headers=headers) as api:
            funnel = (await api.get("/v1/funnel", params={"from": since.isoformat(), "limit": "1000"})).json()
            campaign = (await api.get("/v1/campaigns/spring-webinar")).json()
        async with httpx.AsyncClient(base_url=demo.urls["sync"], headers=headers) as api:
            failures = (await api.get("/v1/sync/failures")).json()
    assert demo.progress.finished == demo.progress.started and not demo.progress.stuck
    own = replace(
        shown,
        write_failures=shown.write_failures - before.write_failures,
        dead_letters=shown.dead_letters - before.dead_letters,
    )
    return own, funnel, campaign, failures


async def test_the_demo_shows_the_bi_apis_numbers_and_a_seed_gives_the_same_funnel(tmp_path: Path) -> None:
    shown, funnel, campaign, failures = await play(options(tmp_path / "first", seed=42))
    again, _, _, _ = await play(options(tmp_path / "second", seed=42))

    api_entries = {Stage(row["stage"]): row["entries"] for row in funnel["rows"]}
    assert {stage: line.entries for stage, line in shown.stages.items()} == api_entries
    assert api_entries.get(Stage.MQL, 0) > 0 and api_entries.get(Stage.SAL, 0) > 0
    by_stage = {Stage(row["stage"]): row["entries"] for row in campaign["rows"]}
    assert {s: n for s, n in shown.campaigns["spring-webinar"].items() if n} == {
        s: n for s, n in by_stage.items() if n
    }
    assert {s: line.entries for s, line in again.stages.items()} == {
        s: line.entries for s, line in shown.stages.items()
    }
    assert shown.write_failures == 0 and shown.dead_letters == 0, failures


async def test_the_simulators_profile_plays_against_a_running_stack(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("ingest", "sync", "metrics", "hubspot", "salesforce")}
    stack_env = {
        "ONEFUNNEL_HUBSPOT_CLIENT_SECRET": "stack-secret",
        "ONEFUNNEL_HUBSPOT_ACCESS_TOKEN": "pat-stack",
        "ONEFUNNEL_HUBSPOT_BASE_URL": f"http://127.0.0.1:{ports['hubspot']}",
        "ONEFUNNEL_SALESFORCE_ORG_IDS": "00D000000000062EAA",
        "ONEFUNNEL_SALESFORCE_CLIENT_ID": "stack-client",
        "ONEFUNNEL_SALESFORCE_CLIENT_SECRET": "stack-client-secret",
        "ONEFUNNEL_SALESFORCE_LOGIN_URL": f"http://127.0.0.1:{ports['salesforce']}",
        "ONEFUNNEL_API_TOKENS": TOKEN,
        **{f"ONEFUNNEL_{name.upper()}_PORT": str(ports[name]) for name in ("ingest", "sync", "metrics")},
    }
    stack = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block; the stack runs beside the test)
        [sys.executable, "-m", "onefunnel.cli", "run"],
        cwd=tmp_path,
        env={**os.environ, **stack_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with pytest.MonkeyPatch.context() as env:
            for name, value in stack_env.items():
                env.setenv(name, value)
            chosen = DemoOptions(
                duration=6,
                rate=3,
                seed=5,
                state_dir=tmp_path / "demo",
                api_token=TOKEN,
                ingest=IngestSettings(),
                sync=SyncSettings(),
                metrics=MetricsSettings(),
            )
        since = datetime.now(UTC)
        world = remote_world(
            chosen,
            against=f"http://127.0.0.1:{ports['ingest']}",
            bi_url=f"http://127.0.0.1:{ports['metrics']}",
            simulator_host="127.0.0.1",
            ports=(ports["hubspot"], ports["salesforce"]),
        )
        async with world as (demo, _server):
            async with asyncio.timeout(120):
                await drive(demo, chosen)
            shown = await settled(demo, chosen, since=since)
    finally:
        stack.terminate()
        stack.wait(20)

    assert demo.progress.finished == demo.progress.started and not demo.progress.stuck
    assert (
        shown.stages[Stage.SAL].entries > 0
    )  # sync handed leads to the Salesforce simulator and sales took them
