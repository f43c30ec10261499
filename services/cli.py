"""The `onefunnel` command: start one service, or all of them in one process."""

from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from sqlalchemy.ext.asyncio import async_sessionmaker

from onefunnel import compose, serving
from onefunnel.compose import Services
from onefunnel.demo.command import api_token, default_state_dir
from onefunnel.demo.command import run as run_demo
from onefunnel.demo.run import DemoOptions, demo_world, remote_world
from onefunnel.ingest.settings import IngestSettings
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.shared import schema_files
from onefunnel.shared.bus import open_bus
from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.funnel import Funnel, load_funnel
from onefunnel.shared.logs import configure_logging
from onefunnel.shared.settings import (
    ApiSettings,
    BusKind,
    BusSettings,
    DatabaseSettings,
    FunnelSettings,
    LogSettings,
    TopicSettings,
)
from onefunnel.shared.stage_mapping import FunnelDefinitionError
from onefunnel.sync.clients import open_clients
from onefunnel.sync.settings import SyncSettings
from onefunnel.sync.write_results import replay_failed

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
S = TypeVar("S", bound=BaseSettings)
SERVICES = ("ingest", "sync", "metrics")
# What a body's dead-letter copy adds to it (headers, record framing), with room to spare.
BODY_HEADROOM = 65_536


def load(settings_class: Callable[[], S]) -> S:
    """Read one Settings class, or exit with one line naming the bad variable."""
    try:
        return settings_class()
    except ValidationError as error:
        first = error.errors()[0]
        variable = "ONEFUNNEL_" + "_".join(str(part) for part in first["loc"]).upper()
        typer.echo(f"onefunnel: invalid configuration: {variable}: {first['msg']}", err=True)
        raise typer.Exit(2) from None


def load_funnel_definition(settings: FunnelSettings) -> Funnel:
    """Read and validate the funnel definition, or exit with one line saying what is wrong."""
    try:
        return load_funnel(settings.funnel_file) if settings.funnel_file else load_funnel()
    except FunnelDefinitionError as error:
        typer.echo(f"onefunnel: invalid funnel definition (ONEFUNNEL_FUNNEL_FILE): {error}", err=True)
        raise typer.Exit(2) from None


def check_room_for_bodies(bus: BusSettings, ingest: IngestSettings) -> None:
    """Exit unless every body ingest accepts fits in a Kafka message, as events and as a dead letter."""
    room = bus.kafka_max_message_bytes - BODY_HEADROOM
    if bus.bus is BusKind.KAFKA and ingest.max_body_bytes > room:
        typer.echo(
            "onefunnel: invalid configuration: ONEFUNNEL_MAX_BODY_BYTES: must be at most "
            f"ONEFUNNEL_KAFKA_MAX_MESSAGE_BYTES - {BODY_HEADROOM} ({room}) on Kafka",
            err=True,
        )
        raise typer.Exit(2)


async def _serve(names: Sequence[str]) -> None:
    bus_settings, topics, database = load(BusSettings), load(TopicSettings), load(DatabaseSettings)
    ingest, sync, metrics = load(IngestSettings), load(SyncSettings), load(MetricsSettings)
    api_tokens = [token.get_secret_value() for token in load(ApiSettings).api_tokens]
    funnel = load_funnel_definition(load(FunnelSettings))
    if "ingest" in names:
        check_room_for_bodies(bus_settings, ingest)
    async with AsyncExitStack() as stack:
        bus = await stack.enter_async_context(open_bus(bus_settings, topics=topics.all))
        engine = create_engine(database)
        stack.push_async_callback(engine.dispose)
        clients = await stack.enter_async_context(open_clients(sync)) if "sync" in names else []
        services = Services(
            bus=bus,
            engine=engine,
            topics=topics,
            funnel=funnel,
            ingest=ingest,
            sync=sync,
            metrics=metrics,
            api_tokens=api_tokens,
        )
        endpoints = compose.endpoints(services, names=names, clients=clients)
        for endpoint in endpoints:
            typer.echo(
                f"onefunnel {endpoint.name:<8} http://{endpoint.host}:{endpoint.port}  "
                "(/healthz /readyz /metrics /docs)",
                err=True,
            )
        typer.echo(
            f"bus: {bus_settings.bus}; database: {engine.url.render_as_string(hide_password=True)}; "
            "Ctrl-C stops.",
            err=True,
        )
        await serving.serve(endpoints)


def _start(services: Sequence[str]) -> None:
    configure_logging(load(LogSettings))
    try:
        serving.run(_serve(services))
    except serving.StartupFailed as error:
        typer.echo(f"onefunnel: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def run() -> None:
    """Start ingest, sync and metrics in one process."""
    _start(SERVICES)


@app.command()
def ingest() -> None:
    """Start the ingest service alone."""
    _start(["ingest"])


@app.command()
def sync() -> None:
    """Start the sync service alone."""
    _start(["sync"])


@app.command()
def metrics() -> None:
    """Start the metrics service alone."""
    _start(["metrics"])


@app.command()
def demo(
    duration: Annotated[
        float, typer.Option(min=5, help="Seconds of traffic (time-compressed journeys).")
    ] = 60,
    rate: Annotated[float, typer.Option(min=0.1, max=50, help="New leads per second.")] = 2,
    seed: Annotated[
        int, typer.Option(help="The same seed (and duration and rate) gives the same funnel.")
    ] = 1,
    keep_running: Annotated[
        bool, typer.Option(help="Keep the services up after the traffic, for the BI API.")
    ] = True,
    against: Annotated[
        str | None,
        typer.Option(help="Play against a running stack's ingest URL instead of starting services."),
    ] = None,
    bi: Annotated[
        str, typer.Option(help="With --against: the stack's metrics (BI API) URL.")
    ] = "http://metrics:8002",
    simulator_host: Annotated[
        str, typer.Option(help="With --against: the address the simulators listen on.")
    ] = "0.0.0.0",  # noqa: S104 (inside a container, for the stack's sync to reach them)
    hubspot_port: Annotated[int, typer.Option(help="With --against: the HubSpot simulator's port.")] = 8010,
    salesforce_port: Annotated[
        int, typer.Option(help="With --against: the Salesforce simulator's port.")
    ] = 8011,
) -> None:
    """Run everything with simulated HubSpot and Salesforce traffic and show the funnel live."""
    configure_logging(LogSettings(log_level="WARNING", log_format="text"))
    options = DemoOptions(
        duration=duration,
        rate=rate,
        seed=seed,
        state_dir=default_state_dir(seed),
        api_token=api_token([t.get_secret_value() for t in load(ApiSettings).api_tokens]),
        ingest=load(IngestSettings),
        sync=load(SyncSettings),
        metrics=load(MetricsSettings),
    )
    world = (
        remote_world(
            options,
            against=against.rstrip("/"),
            bi_url=bi.rstrip("/"),
            simulator_host=simulator_host,
            ports=(hubspot_port, salesforce_port),
        )
        if against
        else demo_world(options)
    )
    try:
        serving.run(run_demo(options, console=Console(), keep_running=keep_running, world=world))
    except ValueError as error:  # the configuration --against needs is missing
        typer.echo(f"onefunnel: {error}", err=True)
        raise typer.Exit(2) from None
    except serving.StartupFailed as error:
        typer.echo(f"onefunnel: {error}", err=True)
        raise typer.Exit(1) from None


@app.command("migrate")
def migrate_command(
    service: Annotated[
        list[str] | None, typer.Option(help="Only this service's tables (repeatable).")
    ] = None,
) -> None:
    """Upgrade the database to the newest schema of each service."""
    database = load(DatabaseSettings)

    async def upgrade() -> None:
        engine = create_engine(database)
        try:
            for name in service or ["sync", "metrics"]:
                await migrate(engine, service=name)
                typer.echo(f"{name}: migrated to head", err=True)
        finally:
            await engine.dispose()

    serving.run(upgrade())


@app.command()
def replay(
    system: Annotated[
        str | None, typer.Option(help="Only writes to this platform (hubspot, salesforce).")
    ] = None,
) -> None:
    """Re-drive write-backs the platforms refused (GET /v1/sync/failures), once the cause is fixed."""
    database = load(DatabaseSettings)

    async def run_replay() -> int:
        engine = create_engine(database)
        try:
            await migrate(engine, service="sync")
            return await replay_failed(async_sessionmaker(engine, expire_on_commit=False), system=system)
        finally:
            await engine.dispose()

    count = serving.run(run_replay())
    typer.echo(f"{count} failed write(s) queued again; the sync service makes them now", err=True)


@app.command()
def schemas() -> None:
    """Write the JSON Schema of every wire event into shared/schemas/ (commit the result)."""
    for path in schema_files.write():
        typer.echo(str(path))


def main() -> None:
    app(prog_name="onefunnel")


if __name__ == "__main__":
    main()
