"""docker-compose.yml and the Dockerfile against the code and deploy/: a test that fails when they drift.

There is no Docker engine here, so nothing is built as an image. What can drift is checked statically
(variables, commands, ports, mounts, scrape targets, provisioning), and the Dockerfile's build steps
are run as written, in a throwaway directory standing in for the container's filesystem.
"""

import fnmatch
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.core
import typer.main
import yaml
from pydantic_settings import BaseSettings

from onefunnel.cli import app
from onefunnel.ingest.settings import IngestSettings
from onefunnel.metrics.settings import MetricsSettings
from onefunnel.shared.settings import (
    ApiSettings,
    BusKind,
    BusSettings,
    DatabaseSettings,
    FunnelSettings,
    LogSettings,
    TopicSettings,
)
from onefunnel.sync.settings import SyncSettings
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
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
VARIABLES = {f"ONEFUNNEL_{name.upper()}" for s in SETTINGS for name in s.model_fields}
PORTS = {
    "ingest": IngestSettings.model_fields["ingest_port"].default,
    "sync": SyncSettings.model_fields["sync_port"].default,
    "metrics": MetricsSettings.model_fields["metrics_port"].default,
}
ONEFUNNEL_SERVICES = {name: service for name, service in SERVICES.items() if "build" in service}


def subcommands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return dict(group.commands)


def interpolate(value: object, shell: Mapping[str, str]) -> str:
    """Resolve Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` as `docker compose` would."""

    def one(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        if shell.get(name):
            return shell[name]
        if operator == "?":
            raise AssertionError(f"${{{name}}} is required: {default}")
        return default if operator == "-" else ""

    return re.sub(r"\$\{(\w+)(?::([-?])([^}]*))?\}", one, str(value)).replace("$$", "$")


def environment(service: Mapping[str, Any], shell: Mapping[str, str]) -> dict[str, str]:
    """The container's environment; a key without a value is passed through from the shell, or unset."""
    resolved = {}
    for key, value in (service.get("environment") or {}).items():
        if value is None:
            if key in shell:
                resolved[key] = shell[key]
        else:
            resolved[key] = interpolate(value, shell)
    return resolved


def test_compose_and_the_dockerfile_set_only_variables_the_settings_read() -> None:
    dockerfile_env = {key for key, _ in image_env(parse_dockerfile()[-1])}
    used = {key for service in SERVICES.values() for key in service.get("environment") or {}}
    used |= dockerfile_env

    unknown = {key for key in used if key.startswith("ONEFUNNEL_")} - VARIABLES

    assert not unknown, f"not a setting of onefunnel: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(ONEFUNNEL_SERVICES))
def test_each_service_environment_is_a_valid_configuration_with_no_secrets_set(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("ONEFUNNEL_"):
            monkeypatch.delenv(key)
    for key, value in environment(ONEFUNNEL_SERVICES[name], shell={}).items():
        monkeypatch.setenv(key, value)

    for settings in SETTINGS:
        settings()  # raises on any invalid value
    bus, database, ingest, sync = BusSettings(), DatabaseSettings(), IngestSettings(), SyncSettings()
    host, _, port = bus.kafka_bootstrap_servers.partition(":")
    url, postgres = urlsplit(database.database_url), environment(SERVICES["postgres"], shell={})

    assert bus.bus is BusKind.KAFKA and host == "kafka"
    assert f"PLAINTEXT://kafka:{port}" in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert (url.scheme, url.hostname, url.port) == ("postgresql+asyncpg", "postgres", 5432)
    assert (url.username, url.password, url.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        f"/{postgres['POSTGRES_DB']}",
    )
    # Unset secrets leave every source disabled and every platform unwritten, never half-configured.
    lists = [field for field, info in IngestSettings.model_fields.items() if info.default == []]
    assert all(getattr(ingest, field) == [] for field in lists)
    assert not ingest.public_base_url and FunnelSettings().funnel_file is None
    assert sync.hubspot_access_token is None and sync.salesforce_client_secret is None
    assert sync.salesforce_client_id is None and sync.salesforce_instance_url is None


def test_secrets_are_never_written_into_the_compose_file() -> None:
    secret = re.compile(r"(SECRET|TOKEN|TOKENS|BASIC_AUTH|PASSWORD|CLIENT_ID|ORG_IDS)$")
    for name, service in ONEFUNNEL_SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if secret.search(key):
                assert value is None or value == f"${{{key}:-}}", f"{name}: {key} has a value in the file"


def test_every_onefunnel_service_runs_a_real_subcommand_with_real_options() -> None:
    commands = subcommands()

    for name, service in ONEFUNNEL_SERVICES.items():
        command, *args = [interpolate(part, {}) for part in service["command"]]
        assert command in commands, f"{name}: `onefunnel {command}` does not exist"
        options = {opt for param in commands[command].params for opt in param.opts}
        unknown = {arg for arg in args if arg.startswith("--")} - options
        assert not unknown, f"{name}: `onefunnel {command}` has no option {sorted(unknown)}"


def test_ports_and_healthchecks_match_the_settings_and_the_dockerfile() -> None:
    expose = {int(port) for i in parse_dockerfile()[-1] if i.keyword == "EXPOSE" for port in i.args.split()}

    assert expose == set(PORTS.values())
    for name, port in PORTS.items():
        service = SERVICES[name]
        assert service["command"] == [name]
        assert [mapping.rsplit(":", 1)[1] for mapping in service["ports"]] == [str(port)]
        host = environment(service, shell={})[f"ONEFUNNEL_{name.upper()}_HOST"]
        assert ipaddress.ip_address(host).is_unspecified  # reachable from the other containers
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
        assert f'("{name.upper()}", "{port}")' in (REPO / "Dockerfile").read_text()


def test_every_dependency_exists_and_waits_on_something_it_can_observe() -> None:
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on an unknown service {dependency}"
            if spec["condition"] == "service_healthy":
                target = SERVICES[dependency]
                assert "healthcheck" in target or "build" in target, f"{dependency} has no healthcheck"
            if spec["condition"] == "service_completed_successfully":
                assert SERVICES[dependency].get("restart") == "no", f"{dependency} is not a one-shot job"


def test_every_mounted_host_path_exists_and_every_named_volume_is_declared() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in (COMPOSE.get("volumes") or {}), f"{name}: volume {source} is not declared"


def mounts(service: str) -> dict[PurePosixPath, Path]:
    """Container path -> repository path of a service's bind mounts."""
    binds = [v.split(":") for v in SERVICES[service].get("volumes") or [] if v.startswith(".")]
    return {PurePosixPath(target): REPO / source for source, target, *_ in binds}


def host_path(service: str, container_path: PurePosixPath) -> Path:
    for target, source in mounts(service).items():
        if container_path == target or target in container_path.parents:
            return source / container_path.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted into {service}")


def test_prometheus_scrapes_every_service_by_its_compose_name_and_port() -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }

    for target in targets:
        assert target.split(":")[0] in SERVICES, f"scrape target {target} is not a compose service"
    assert {f"{name}:{port}" for name, port in PORTS.items()} <= targets


def test_prometheus_loads_its_config_and_the_rules_from_deploy() -> None:
    flags = dict(arg.partition("=")[::2] for arg in SERVICES["prometheus"]["command"])
    config_file = PurePosixPath(flags["--config.file"])
    config = yaml.safe_load(host_path("prometheus", config_file).read_text())

    assert host_path("prometheus", config_file) == REPO / "deploy/prometheus/prometheus.yml"
    assert config["rule_files"], "no rule files"
    for pattern in config["rule_files"]:
        rules = host_path("prometheus", config_file.parent / pattern)
        assert sorted(rules.parent.glob(rules.name)), f"{pattern} matches no file in {rules.parent}"


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_dashboards() -> None:
    provisioning = host_path("grafana", PurePosixPath("/etc/grafana/provisioning"))
    datasources = [
        source
        for path in sorted(provisioning.glob("datasources/*.y*ml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    providers = [
        provider
        for path in sorted(provisioning.glob("dashboards/*.y*ml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]

    urls = [urlsplit(source["url"]) for source in datasources if source["type"] == "prometheus"]
    assert urls and all((url.hostname, url.port) == ("prometheus", 9090) for url in urls)
    assert [port.rsplit(":", 1)[1] for port in SERVICES["prometheus"]["ports"]] == ["9090"]
    assert providers
    for provider in providers:
        folder = host_path("grafana", PurePosixPath(provider["options"]["path"]))
        assert sorted(folder.glob("*.json")), f"no dashboard in {folder}"


def test_the_operators_guide_names_every_alert_and_dashboard() -> None:
    guide = (REPO / "docs/operations.md").read_text()
    alerts = re.findall(r"^\s*- alert: (\w+)", _read_all("deploy/prometheus/rules/*.yml"), re.MULTILINE)
    dashboards = [path.name for path in (REPO / "deploy/grafana/dashboards").glob("*.json")]

    assert alerts and dashboards
    assert [name for name in alerts + dashboards if f"`{name}`" not in guide] == []


def _read_all(pattern: str) -> str:
    return "\n".join(path.read_text() for path in sorted(REPO.glob(pattern)))


def test_kafka_is_the_single_node_kraft_release_the_test_suite_runs() -> None:
    pom = (REPO / "deploy/kafka/pom.xml").read_text()
    version = re.findall(r"<kafka.version>(.+)</kafka.version>", pom)
    kafka = environment(SERVICES["kafka"], shell={})

    assert SERVICES["kafka"]["image"] == f"apache/kafka:{version[0]}"
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{kafka['KAFKA_NODE_ID']}@kafka:9093"
    assert "CONTROLLER://:9093" in kafka["KAFKA_LISTENERS"].split(",") and kafka["CLUSTER_ID"]
    assert all(kafka[key] == "1" for key in kafka if key.endswith(("REPLICATION_FACTOR", "MIN_ISR")))
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # onefunnel creates its own topics


# The Dockerfile, run directly.


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    heredoc: str | None = None


def parse_dockerfile() -> list[list[Instruction]]:
    """The instructions of each stage (continuation lines joined, heredocs attached)."""
    stages: list[list[Instruction]] = []
    lines: Iterator[str] = iter((REPO / "Dockerfile").read_text().splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        keyword, _, args = line.strip().partition(" ")
        heredoc = None
        if marker := re.search(r"<<-?'?(\w+)'?", args):
            body = []
            for body_line in lines:
                if body_line == marker.group(1):
                    break
                body.append(body_line)
            heredoc = "\n".join(body) + "\n"
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args, heredoc))
    return stages


def image_env(stage: list[Instruction]) -> list[tuple[str, str]]:
    return [
        (key, value)
        for i in stage
        if i.keyword == "ENV"
        for key, _, value in (pair.partition("=") for pair in shlex.split(i.args))
    ]


def test_the_image_runs_as_a_non_root_user_and_starts_onefunnel() -> None:
    runtime = parse_dockerfile()[-1]
    user = [i.args for i in runtime if i.keyword == "USER"]
    entrypoint = [i.args for i in runtime if i.keyword == "ENTRYPOINT"]
    cmd = [i.args for i in runtime if i.keyword == "CMD"]

    assert runtime[0].args.startswith("python:3.11-slim")
    assert user and user[-1] not in ("root", "0")
    assert any(i.args.startswith("useradd") and i.args.endswith(f" {user[-1]}") for i in runtime)
    assert entrypoint == ['["onefunnel"]']
    assert yaml.safe_load(cmd[-1])[0] in subcommands()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the build stages' COPY and RUN steps with `root` standing in for the container's `/`.

    The runtime stage's RUN adds a system user, which must not happen to this machine: it is not run.
    """
    root = tmp_path_factory.mktemp("image")
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    workdir = root
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # `python` is a 3.11, as in the image
    started = time.monotonic()
    *build_stages, runtime = parse_dockerfile()
    for stage in [*build_stages, [i for i in runtime if i.keyword != "RUN"]]:
        for i in stage:
            if i.keyword == "WORKDIR":
                workdir = root / i.args.lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif i.keyword == "COPY" and i.heredoc is not None:
                (root / i.args.split()[-1].lstrip("/")).write_text(i.heredoc)
            elif i.keyword == "COPY" and "--from=" not in i.args:  # --from: same paths in one root
                *sources, target = [a for a in i.args.split() if not a.startswith("--")]
                into_directory = target.endswith("/") or len(sources) > 1
                for source in sources:
                    _copy(REPO / source, workdir / target, into_directory=into_directory, ignored=ignored)
            elif i.keyword == "RUN":
                programs = {shlex.split(step)[0].rsplit("/", 1)[-1] for step in i.args.split("&&")}
                assert programs <= {"python", "pip"}, (
                    f"run only python and pip here, not {programs}: {i.args}"
                )
                # Every absolute path is the container's. For speed, pip may use this machine's cache
                # and skips compiling bytecode, which the image does at build time.
                command = re.sub(r"(?<=\s)/(?=\w)", f"{root}/", f" {i.args}").replace(" --no-cache-dir", "")
                result = subprocess.run(
                    ["/bin/sh", "-c", command],
                    cwd=workdir,
                    env={**_clean_env(), "PATH": path, "PIP_NO_COMPILE": "1"},
                    capture_output=True,
                    text=True,
                    timeout=240,
                    check=False,
                )
                assert result.returncode == 0, f"RUN {i.args}\n{result.stderr[-3000:]}"
    assert time.monotonic() - started < 240
    return root


def _copy(source: Path, target: Path, *, into_directory: bool, ignored: list[str]) -> None:
    """COPY as Docker does it: a directory's contents into the target, a file into or as the target."""

    def skip(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(REPO)
        return {n for n in names if any(_ignored(relative / n, pattern) for pattern in ignored)}

    if source.is_dir():
        shutil.copytree(source, target, ignore=skip, dirs_exist_ok=True)
    else:
        target = target / source.name if into_directory else target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _ignored(path: Path, pattern: str) -> bool:
    if pattern.startswith("**/"):
        return fnmatch.fnmatch(path.name, pattern.removeprefix("**/"))
    return fnmatch.fnmatch(str(path), pattern)


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ONEFUNNEL_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }


def test_the_dockerfile_installs_a_working_onefunnel_command(image: Path) -> None:
    venv = image / "opt/onefunnel/bin"
    result = subprocess.run(
        [venv / "onefunnel", "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("ingest", "sync", "metrics", "migrate"))
    installed = subprocess.run(
        [venv / "python", "-c", "import onefunnel.shared.funnel as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert Path(installed.stdout.strip()).is_relative_to(venv.parent / "lib"), "not a regular install"


def test_the_installed_metrics_service_passes_the_image_and_compose_healthchecks(image: Path) -> None:
    runtime = parse_dockerfile()[-1]
    venv = image / "opt/onefunnel/bin"
    workdir = image / [i.args for i in runtime if i.keyword == "WORKDIR"][-1].lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **_clean_env(),
        **{k: v for k, v in image_env(runtime) if k.startswith("ONEFUNNEL_")},
        "PATH": f"{venv}:{os.environ['PATH']}",
        "ONEFUNNEL_METRICS_PORT": str(port),
        "ONEFUNNEL_INGEST_PORT": str(free_port()),
        "ONEFUNNEL_SYNC_PORT": str(free_port()),
    }
    healthcheck = [str(venv / "python"), str(venv / "onefunnel-healthcheck")]
    compose_check = [
        part.replace(":8002/", f":{port}/") for part in SERVICES["metrics"]["healthcheck"]["test"][1:]
    ]

    assert subprocess.run(healthcheck, env=env, timeout=30, check=False).returncode == 1  # nothing up yet
    process = subprocess.Popen(
        [venv / "onefunnel", "metrics"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 45
        while subprocess.run(healthcheck, env=env, timeout=30, check=False).returncode != 0:
            assert process.poll() is None, process.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the metrics service did not become healthy within 45 s"
            time.sleep(0.3)
        assert subprocess.run(compose_check, env=env, timeout=30, check=False).returncode == 0
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output[-3000:]
