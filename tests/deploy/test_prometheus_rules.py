"""deploy/prometheus and deploy/grafana are valid, tested, and speak only of metrics that exist.

promtool checks the configuration and the rules and runs their unit tests
(deploy/prometheus/tests/). The drift tests read every PromQL expression of the rules and the
dashboards and fail when one names a metric, a label or a label value the services' instruments
modules do not define, so renaming a metric cannot silently empty a dashboard or an alert.
"""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.conftest import (
    DASHBOARDS,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    Expression,
    Instrument,
    dashboard_expressions,
    dashboard_variable_queries,
    grouping_labels,
    instruments,
    json_panels,
    load_yaml,
    recording_rules,
    require_binary,
    rule_expressions,
    rules,
    selectors,
)

BUILTIN_SERIES = {"up": {"job", "instance"}, "ALERTS": {"alertname", "alertstate", "severity"}}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
SIMPLE_ALTERNATION = re.compile(r"^[\w-]+(\|[\w-]+)*$")
RECORD_NAME = re.compile(r"^onefunnel:[a-z0-9_]+:[a-z0-9_]+$")
DATASOURCE_UID = "onefunnel-prometheus"


def promtool(*args: str) -> None:
    result = subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def test_promtool_accepts_the_prometheus_configuration() -> None:
    promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))


def test_promtool_accepts_the_rules() -> None:
    promtool("check", "rules", *map(str, RULE_FILES))


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    assert RULE_TEST_FILES, "no promtool tests in deploy/prometheus/tests/"
    promtool("test", "rules", *map(str, RULE_TEST_FILES))


def test_every_alert_is_tested_both_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TEST_FILES:
        for case in load_yaml(path)["tests"]:
            for alert_test in case.get("alert_rule_test", []):
                (fired if alert_test.get("exp_alerts") else silent).add(alert_test["alertname"])
    alerts = {rule["alert"] for _path, rule in rules() if "alert" in rule}

    assert alerts - fired == set(), "alerts never shown firing in deploy/prometheus/tests"
    assert alerts - silent == set(), "alerts never shown staying silent in deploy/prometheus/tests"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_alerts_carry_a_severity_and_tell_what_to_look_at(path: Path) -> None:
    for group in load_yaml(path)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"].startswith("Onefunnel"), rule["alert"]
                assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule["alert"]
                assert {"summary", "description"} <= set(rule.get("annotations", {})), rule["alert"]
            else:
                assert RECORD_NAME.match(rule["record"]), f"{rule['record']} is not onefunnel:<what>:<op>"


def recorded_labels(name: str, recorded: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Labels a recorded series may carry: its by (...) labels and static labels, and its inputs'."""
    labels: set[str] = set()
    for rule in recorded[name]:
        expr = str(rule["expr"])
        labels |= grouping_labels(expr) | set(rule.get("labels", {}))
        for selector in selectors(expr):
            if selector.metric in recorded and selector.metric != name:
                labels |= recorded_labels(selector.metric, recorded)
    return labels


def check_selectors(expressions: list[Expression]) -> list[str]:
    """What each expression selects that the services or the recording rules do not define."""
    known = instruments()
    recorded = recording_rules()
    return [problem for expression in expressions for problem in _check(expression, known, recorded)]


def _check(
    expression: Expression, known: dict[str, Instrument], recorded: dict[str, list[dict[str, Any]]]
) -> list[str]:
    problems = []
    for selector in selectors(expression.expr):
        if selector.metric in recorded:
            labels = recorded_labels(selector.metric, recorded)
        elif selector.metric in BUILTIN_SERIES:
            labels = BUILTIN_SERIES[selector.metric]
        elif selector.metric in known:
            labels = known[selector.metric].labels | TARGET_LABELS
        else:
            problems.append(f"{expression.where}: unknown metric {selector.metric!r}")
            continue
        for label, operator, value in selector.matchers:
            if label not in labels and label != "__name__":
                problems.append(f"{expression.where}: {selector.metric} has no label {label!r}")
                continue
            seen = known[selector.metric].values.get(label) if selector.metric in known else None
            if not seen or (operator in ("=~", "!~") and not SIMPLE_ALTERNATION.match(value)):
                continue  # values not known in advance (campaigns), or a real regular expression
            for alternative in value.split("|"):
                if alternative not in seen:
                    problems.append(
                        f"{expression.where}: {selector.metric}{{{label}}} never takes {alternative!r}"
                    )
    return problems


def test_rules_use_only_metrics_labels_and_values_the_services_define() -> None:
    problems = check_selectors(rule_expressions())

    assert problems == []


def test_dashboards_use_only_metrics_labels_and_values_the_services_define() -> None:
    expressions = dashboard_expressions()
    problems = check_selectors(expressions)
    known = instruments()
    for where, metric, label in dashboard_variable_queries():
        if metric not in known or label not in known[metric].labels:
            problems.append(f"{where}: {metric} has no label {label!r}")

    assert len(expressions) > 20
    assert problems == []


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_are_provisionable_grafana_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    panels = json_panels(path)
    ids = [panel["id"] for panel in panels]

    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert all(t["datasource"]["uid"] == DATASOURCE_UID for t in panel["targets"]), panel["title"]


def test_grafana_provisions_the_data_source_the_dashboards_use() -> None:
    provisioning = REPO / "deploy/grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    providers = yaml.safe_load((provisioning / "dashboards/onefunnel.yml").read_text())["providers"]
    uids = {dashboard_uid(path) for path in DASHBOARDS}

    assert [d["uid"] for d in datasources] == [DATASOURCE_UID]
    assert datasources[0]["type"] == "prometheus"
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    assert len(uids) == len(DASHBOARDS) == 2


def dashboard_uid(path: Path) -> str:
    uid: str = json.loads(path.read_text())["uid"]
    return uid
