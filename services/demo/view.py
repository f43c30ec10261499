"""The demo's live terminal view. Funnel numbers come from the BI API, so they are the API's numbers."""

from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table
from rich.text import Text

from onefunnel.demo.traffic import Progress
from onefunnel.shared.stages import FUNNEL, Stage


@dataclass(frozen=True)
class StageLine:
    """One stage as GET /v1/funnel reports it."""

    entries: int
    rate_from_previous: float | None
    rate_from_base: float | None


@dataclass(frozen=True)
class Snapshot:
    """What the BI API said, and how the pipeline is doing."""

    stages: dict[Stage, StageLine] = field(default_factory=dict)  # since the demo started
    campaigns: dict[str, dict[Stage, int]] = field(default_factory=dict)
    sync_lag_p50: float | None = None
    sync_lag_p99: float | None = None
    write_failures: int = 0
    dead_letters: int = 0
    webhooks: int = 0
    duplicates_sent: int = 0
    remote: bool = False  # played against a running stack: its pipeline health is not in this process


def render(snapshot: Snapshot, progress: Progress, *, elapsed: float, done: bool) -> Group:
    state = "finished, services still up for the BI API (Ctrl-C stops)" if done else "running"
    header = Text(
        f"onefunnel demo: {state}  |  {elapsed:5.0f} s  |  leads started {progress.started}, "
        f"journeys finished {progress.finished}",
        style="bold",
    )
    return Group(header, _funnel(snapshot), _campaigns(snapshot), _pipeline(snapshot))


def _funnel(snapshot: Snapshot) -> Table:
    table = Table(title="Funnel since the demo started (GET /v1/funnel)", expand=True)
    for column in ("stage", "entries", "from previous stage", "from subscriber"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in (*FUNNEL, Stage.NURTURE, Stage.DISQUALIFIED):
        line = snapshot.stages.get(stage)
        if line is None:
            table.add_row(str(stage), "0", "", "")
            continue
        table.add_row(
            str(stage), str(line.entries), _rate(line.rate_from_previous), _rate(line.rate_from_base)
        )
    return table


def _campaigns(snapshot: Snapshot) -> Table:
    table = Table(title="Campaigns", expand=True)
    shown = (Stage.MQL, Stage.SAL, Stage.OPPORTUNITY, Stage.CUSTOMER)
    table.add_column("campaign")
    for stage in shown:
        table.add_column(str(stage), justify="right")
    table.add_column("mql -> customer", justify="right")
    for name, entries in sorted(snapshot.campaigns.items()):
        counts = [entries.get(stage, 0) for stage in shown]
        table.add_row(name, *map(str, counts), _share(counts[-1], counts[0]))
    return table


def _pipeline(snapshot: Snapshot) -> Text:
    if snapshot.remote:
        return Text(
            f"duplicates sent {snapshot.duplicates_sent}  |  pipeline health: the stack's Grafana dashboards"
        )
    lag = (
        f"sync lag p50 {snapshot.sync_lag_p50:.2f} s, p99 {snapshot.sync_lag_p99:.2f} s"
        if snapshot.sync_lag_p50 is not None and snapshot.sync_lag_p99 is not None
        else "sync lag: no write-back yet"
    )
    return Text(
        f"{lag}  |  webhooks {snapshot.webhooks} (duplicates sent {snapshot.duplicates_sent})  |  "
        f"write failures {snapshot.write_failures}  |  dead letters {snapshot.dead_letters}"
    )


def _share(part: int, whole: int | None) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _rate(rate: float | None) -> str:
    return "" if rate is None else f"{100 * rate:.0f}%"
