"""A real Prometheus for the deploy tests, and the PromQL that deploy/ ships.

The `prometheus` fixture starts Debian's `prometheus` binary once per session on a free loopback
port, with a configuration generated from deploy/prometheus/prometheus.yml: only the metrics job,
scraping 127.0.0.1:<metrics_port> every second (the test serves the metrics service there), and
the rules of deploy/prometheus/rules/ evaluated every second. A Prometheus that cannot start
fails the tests that need it; nothing is skipped.
"""

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from onefunnel.ingest import instruments as ingest_instruments
from onefunnel.metrics import instruments as metrics_instruments
from onefunnel.sync import instruments as sync_instruments
from tests.conftest import REPO, free_port

PROMETHEUS_DIR = REPO / "deploy/prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARDS = sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))
METRICS_JOB = "onefunnel-metrics"
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Expression:
    where: str  # for failure messages: file, and the rule or panel
    expr: str


def require_binary(name: str) -> str:
    """Return the path of a Prometheus tool, or fail saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found on PATH: install Debian's prometheus package "
            "(apt-get install prometheus; deploy/test-env/setup.sh does it as root)",
            pytrace=False,
        )
    return path


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path} is not a YAML mapping"
    return loaded


def rule_groups() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, group) for path in RULE_FILES for group in load_yaml(path)["groups"]]


def rules() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, rule) for path, group in rule_groups() for rule in group["rules"]]


def rule_expressions() -> list[Expression]:
    return [
        Expression(f"{path.name}: {rule.get('record') or rule.get('alert')}", str(rule["expr"]))
        for path, rule in rules()
    ]


def dashboard_expressions() -> list[Expression]:
    """Every `targets[].expr` of every panel, Grafana variables still in them."""
    found = []
    for path in DASHBOARDS:
        for panel in json_panels(path):
            for target in panel.get("targets", []):
                found.append(Expression(f"{path.name}: {panel['title']!r} {target['refId']}", target["expr"]))
    return found


def json_panels(path: Path) -> list[dict[str, Any]]:
    dashboard = json.loads(path.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*(?P<label>\w+)\)$")


def dashboard_variable_queries() -> list[tuple[str, str, str]]:
    """(where, metric, label) of every `label_values(metric, label)` template variable."""
    found = []
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = LABEL_VALUES.match(query)
            assert match, f"{path.name}: variable {variable['name']} is not label_values(metric, label)"
            found.append((f"{path.name}: ${variable['name']}", match["metric"], match["label"]))
    return found


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}')
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def selectors(expr: str) -> list[Selector]:
    """The series an expression selects: a scanner for the PromQL we write, not a full parser.

    Prometheus itself parses every expression in the end-to-end test; this only has to find the
    metric names and label matchers, without a running server.
    """
    found = []
    for match in _SELECTOR.finditer(expr):
        found.append(Selector(match[1] or "", tuple(_MATCHER.findall(match[2]))))
    rest = _STRING.sub(" ", _SELECTOR.sub(" ", expr))
    rest = _GROUPING.sub(" ", _RANGE.sub(" ", rest))
    for match in _IDENTIFIER.finditer(rest):
        called = rest[match.end() :].lstrip().startswith("(")
        if match[0] not in _KEYWORDS and not called:
            found.append(Selector(match[0], ()))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Label names in an expression's by (...) clauses."""
    labels: set[str] = set()
    for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        labels.update(name.strip() for name in clause.split(",") if name.strip())
    return labels


@dataclass
class Instrument:
    """One sample name the services expose: which services, its label names, the values seen."""

    services: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    values: dict[str, set[str]] = field(default_factory=dict)


_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
SERVICES = {"ingest": ingest_instruments, "sync": sync_instruments, "metrics": metrics_instruments}


def instruments() -> dict[str, Instrument]:
    """Every sample name the three services' registries expose (values: pre-initialized)."""
    found: dict[str, Instrument] = {}
    for service, module in SERVICES.items():
        for collector in vars(module).values():
            if not isinstance(collector, MetricWrapperBase):
                continue
            for family in collector.describe():
                for suffix in _SUFFIXES[family.type]:
                    instrument = found.setdefault(family.name + suffix, Instrument())
                    instrument.services.add(service)
                    # prometheus_client keeps a metric's label names only on the collector
                    instrument.labels.update(collector._labelnames, ["le"] if suffix == "_bucket" else [])
        for family in module.REGISTRY.collect():
            for sample in family.samples:
                # the collectors that are no module attribute (pipeline_instruments.process) show here only
                instrument = found.setdefault(sample.name, Instrument())
                instrument.services.add(service)
                instrument.labels.update(sample.labels)
                for label, value in sample.labels.items():
                    instrument.values.setdefault(label, set()).add(value)
    return found


def recording_rules() -> dict[str, list[dict[str, Any]]]:
    recorded: dict[str, list[dict[str, Any]]] = {}
    for _path, rule in rules():
        if "record" in rule:
            recorded.setdefault(rule["record"], []).append(rule)
    return recorded


def source_metrics(expr: str, recorded: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The scraped metric names an expression reads, through the recording rules it uses."""
    names: set[str] = set()
    for selector in selectors(expr):
        if selector.metric in recorded:
            for rule in recorded[selector.metric]:
                names |= source_metrics(str(rule["expr"]), recorded)
        else:
            names.add(selector.metric)
    return names


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    metrics_port: int  # Prometheus scrapes job onefunnel-metrics at 127.0.0.1:metrics_port
    log: Path


def _test_config(directory: Path, metrics_port: int) -> Path:
    """The deployed configuration, narrowed to the metrics job on loopback and sped up."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == METRICS_JOB]
    assert jobs, f"deploy/prometheus/prometheus.yml has no {METRICS_JOB} job"
    # Only the metrics service runs in the test; ingest and sync targets would only be down.
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["scrape_configs"] = jobs
    rules_dir = directory / "rules"
    rules_dir.mkdir()
    for path in RULE_FILES:
        # Groups evaluated once a minute in production are evaluated every second here, so the
        # test sees their results within seconds; the expressions are the deployed ones.
        content = load_yaml(path)
        for group in content["groups"]:
            group.pop("interval", None)
        (rules_dir / path.name).write_text(yaml.safe_dump(content, sort_keys=False))
    config["rule_files"] = [str(rules_dir / "*.yml")]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}", pytrace=False
            )
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"prometheus not ready within {START_TIMEOUT_SECONDS} s:\n{log.read_text()[-3000:]}", pytrace=False
    )


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    binary = require_binary("prometheus")
    directory = Path(tempfile.mkdtemp(prefix="onefunnel-prometheus-"))
    port, metrics_port = free_port(), free_port()
    while metrics_port == port:
        metrics_port = free_port()
    config = _test_config(directory, metrics_port)
    log = directory / "prometheus.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_ready(url, process, log)
        yield PrometheusServer(url=url, metrics_port=metrics_port, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)
