"""The README is part of the interface: its configuration table and commands must match the code."""

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from onefunnel.ingest.settings import IngestSettings
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.shared.settings import (
    ApiSettings,
    BusSettings,
    DatabaseSettings,
    FunnelSettings,
    LogSettings,
    TopicSettings,
)
from onefunnel.sync.settings import SyncSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SETTINGS: list[type[BaseSettings]] = [
    ApiSettings,
    BusSettings,
    TopicSettings,
    DatabaseSettings,
    FunnelSettings,
    LogSettings,
    IngestSettings,
    SyncSettings,
    MetricsSettings,
]


def _documented() -> dict[str, str]:
    return dict(re.findall(r"^\| `(ONEFUNNEL_\w+)` \| `([^`]*)` \|", README, flags=re.MULTILINE))


def _in_code() -> dict[str, str]:
    variables = {}
    for settings in SETTINGS:
        for name, field in settings.model_fields.items():
            default = getattr(field.default, "value", field.default)
            variables[f"ONEFUNNEL_{name.upper()}"] = "unset" if default in (None, []) else str(default)
    return variables


def test_every_setting_is_documented_in_the_readme_with_its_default() -> None:
    assert _documented() == _in_code()


def test_the_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()

    assert "make run" in README and "make test" in README
    assert ci.strip().endswith("make test")
