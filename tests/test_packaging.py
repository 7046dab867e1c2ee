"""packaging/: the image, the compose file and the Kubernetes manifests that run Orchestra as services.

Nothing here needs a Docker engine or a cluster: the Dockerfile goes through hadolint, the compose
file is read as YAML, each Kubernetes overlay is rendered with `kubectl kustomize` and every rendered
document validated against the Kubernetes schemas, and the health check runs against real processes.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import kubernetes_validate
import pytest
import yaml
from prometheus_client import start_http_server
from redis import Redis

from agents.build.dockerfile import lint
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.telemetry import metrics_registry
from tests.support.services import free_port, wait_for
from tests.support.slack_workspace import orchestra_process

PACKAGING = PROJECT_ROOT / "packaging"
DOCKERFILE = PACKAGING / "Dockerfile"
HEALTHCHECK = PACKAGING / "healthcheck.py"
KUBERNETES_VERSION = "1.32"  # the kubectl on the machine image; kubernetes-validate is pinned in requirements-dev


class Overlay(NamedTuple):
    replicas: tuple[int, int, int]  # bot, worker, webhooks
    tag: str
    host: str


OVERLAYS = {"staging": Overlay((1, 1, 1), "main", "orchestra-staging.example.com"),
            "production": Overlay((1, 4, 2), "0.1.0", "orchestra.example.com")}
ORCHESTRA_SERVICES = ("bot", "worker", "webhooks")

Doc = dict[str, Any]


# The Dockerfile

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped, spaces collapsed."""
    logical = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    return [(words[0].upper(), " ".join(words[1:])) for words in map(str.split, logical.splitlines()) if words]


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def test_the_dockerfile_passes_hadolint() -> None:
    assert lint(DOCKERFILE.read_text(), file="packaging/Dockerfile") == []


def test_the_image_is_one_for_every_process_running_unprivileged() -> None:
    steps = instructions(DOCKERFILE.read_text())
    final = final_stage(steps)

    assert ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm") in steps
    assert [args for name, args in steps if name == "FROM"] == ["${BASE_IMAGE} AS deps", "deps AS app", "${BASE_IMAGE}"]
    assert ("USER", "10001:10001") in final
    assert ("ENTRYPOINT", '["orchestra"]') in final and ("CMD", '["bot"]') in final
    assert [args for name, args in final if name == "HEALTHCHECK"] == [
        "--interval=15s --timeout=5s --start-period=20s --retries=3 "
        'CMD ["python", "/app/packaging/healthcheck.py"]']


def test_dependencies_are_installed_before_the_code_is_copied_and_the_ca_bundle_is_never_copied() -> None:
    steps = instructions(DOCKERFILE.read_text())
    copies = [args for name, args in steps if name == "COPY"]
    installs = [i for i, (name, args) in enumerate(steps) if name == "RUN" and "pip install" in args]

    requirements = steps.index(("COPY", "requirements.txt /tmp/requirements.txt"))
    first_code = steps.index(("COPY", "orchestra /app/orchestra"))
    assert requirements < installs[0] < first_code < installs[1]
    assert "-r /tmp/requirements.txt" in steps[installs[0]][1]
    assert not any(".pem" in args or "ca_bundle" in args for args in copies)
    assert all("--mount=type=secret,id=ca_bundle,required=false" in steps[i][1] for i in installs)


def test_every_package_of_the_orchestra_command_and_the_prompts_are_in_the_image() -> None:
    found = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.rstrip("*") for pattern in found["include"]]
    copies = {args for name, args in instructions(DOCKERFILE.read_text()) if name == "COPY"}

    assert {f"{top} /app/{top}" for top in (*packages, "prompts")} <= copies
    assert "packaging/healthcheck.py /app/packaging/healthcheck.py" in copies


# The health check the image, the compose file and the Kubernetes probes share

def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def metrics_of() -> Iterator[Any]:
    """Serve the product's /metrics for a Redis at ``url`` on a free loopback port; yields the starter."""
    servers = []

    def start(url: str) -> int:
        server, _ = start_http_server(0, addr="127.0.0.1", registry=metrics_registry(Redis.from_url(url)))
        servers.append(server)
        return int(server.server_port)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_probe_is_ready_when_metrics_answer_and_redis_answered_them(metrics_of: Any, redis_url: str) -> None:
    port = metrics_of(redis_url)

    assert probe("--port", str(port), "--ready").returncode == 0


def test_without_redis_a_process_is_alive_but_not_ready(metrics_of: Any) -> None:
    port = metrics_of(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there

    assert probe("--port", str(port)).returncode == 0
    not_ready = probe("--port", str(port), "--ready")
    assert not_ready.returncode == 1 and "Redis did not answer" in not_ready.stderr


def test_a_process_that_does_not_answer_is_unhealthy() -> None:
    port = free_port()

    dead = probe("--port", str(port), "--timeout", "1")
    assert dead.returncode == 1 and f"127.0.0.1:{port}/metrics" in dead.stderr


# docker-compose.yml

@pytest.fixture(scope="module")
def compose() -> Doc:
    doc: Doc = yaml.safe_load((PACKAGING / "docker-compose.yml").read_text())
    return doc


def test_compose_runs_redis_the_three_processes_and_prometheus(compose: Doc) -> None:
    services = compose["services"]

    assert set(services) == {"redis", *ORCHESTRA_SERVICES, "prometheus"}
    assert {services[s]["image"] for s in ORCHESTRA_SERVICES} == {"devops-orchestra:${ORCHESTRA_VERSION:-dev}"}
    for name in ORCHESTRA_SERVICES:
        build = services[name]["build"]
        assert (PACKAGING / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert services[name]["init"] is True and services[name]["read_only"] is True
        assert services[name]["env_file"] == ".env"
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert [services[s]["command"] for s in ORCHESTRA_SERVICES] == [
        ["bot"], ["worker"], ["webhooks", "--host", "0.0.0.0", "--port", "8080"]]
    assert services["worker"]["deploy"]["replicas"] == 2


def test_each_compose_health_check_probes_the_port_its_process_serves(compose: Doc) -> None:
    services = compose["services"]
    metrics = Settings.from_env({}).metrics_port

    ports = {name: services[name]["healthcheck"]["test"][-1] for name in ORCHESTRA_SERVICES}
    assert ports == {"bot": str(metrics), "worker": str(metrics + 1), "webhooks": "8080"}
    assert all(services[name]["healthcheck"]["test"][:3] == ["CMD", "python", "/app/packaging/healthcheck.py"]
               for name in ORCHESTRA_SERVICES)
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]


def test_compose_needs_no_host_network_and_only_the_workers_reach_the_docker_socket(compose: Doc) -> None:
    services = compose["services"]

    assert not any("network_mode" in s or s.get("privileged") for s in services.values())
    socket_users = {name for name, s in services.items()
                    if any(str(v).startswith("/var/run/docker.sock") for v in s.get("volumes", []))}
    assert socket_users == {"worker"}
    assert services["worker"]["group_add"] == ["${DOCKER_GID:-999}"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    assert services["webhooks"]["ports"] == ["127.0.0.1:8080:8080"]


def test_redis_takes_its_password_from_the_env_file_and_the_processes_use_it(compose: Doc) -> None:
    services = compose["services"]
    password = "${REDIS_PASSWORD:?set REDIS_PASSWORD in packaging/.env}"

    assert services["redis"]["command"][:3] == ["redis-server", "--requirepass", password]
    for name in ORCHESTRA_SERVICES:
        assert services[name]["environment"]["REDIS_URL"] == f"redis://:{password}@redis:6379/0"


def test_the_env_file_is_documented_ignored_and_holds_no_values_of_secrets() -> None:
    example = dict(line.split("=", 1) for line in (PACKAGING / "env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    secrets = ("REDIS_PASSWORD", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "GITHUB_WEBHOOK_SECRET", "GITHUB_TOKEN",
               "ANTHROPIC_API_KEY")

    assert {*secrets, "ORCHESTRA_LLM_URL", "ORCHESTRA_REPOS", "DOCKER_GID"} <= example.keys()
    assert all(example[name] == "" for name in secrets)
    assert ".env" in (PACKAGING / ".gitignore").read_text().splitlines()


def test_prometheus_scrapes_every_process(compose: Doc) -> None:
    prometheus = compose["services"]["prometheus"]
    config = yaml.safe_load((PACKAGING / "prometheus.yml").read_text())

    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    targets = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert targets == {"orchestra-webhooks": [{"targets": ["webhooks:8080"]}],
                       "orchestra-bot": [{"targets": ["bot:9464"]}], "orchestra-worker": [{"targets": ["worker:9465"]}]}
    assert all(compose["services"][name]["environment"]["ORCHESTRA_METRICS_HOST"] == "0.0.0.0"
               for name in ("bot", "worker"))


def test_the_compose_commands_start_processes_their_health_checks_find_ready(
        compose: Doc, settings: Settings, tmp_path: Path) -> None:
    services = compose["services"]
    base, webhooks_port = free_ports()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "REDIS_URL": settings.redis_url,
           "ORCHESTRA_WORKDIR": str(settings.workdir), "ORCHESTRA_METRICS_PORT": str(base),
           "GITHUB_WEBHOOK_SECRET": "not-a-real-secret", "ORCHESTRA_LOG_FORMAT": "json"}
    webhooks = [str(webhooks_port) if arg == "8080" else arg for arg in services["webhooks"]["command"]]

    with orchestra_process(services["worker"]["command"], env, tmp_path / "worker.log"), \
            orchestra_process(webhooks, env, tmp_path / "webhooks.log"):
        for port, log in ((base + 1, "worker.log"), (webhooks_port, "webhooks.log")):
            try:
                wait_for(partial(ready, port), timeout=60, interval=0.5, what=f"a ready process on port {port}")
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n{log}:\n{(tmp_path / log).read_text()[-3000:]}")


def free_ports() -> tuple[int, int]:
    """A metrics base port whose next port is free too (the worker's), and another for the receiver."""
    while True:
        with socket.socket() as bot, socket.socket() as worker, socket.socket() as webhooks:
            bot.bind(("127.0.0.1", 0))
            base = bot.getsockname()[1]
            try:
                worker.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
            webhooks.bind(("127.0.0.1", 0))
            return base, webhooks.getsockname()[1]


def ready(port: int) -> bool:
    return probe("--port", str(port), "--ready", "--timeout", "1").returncode == 0


# Kubernetes

def kustomize(overlay: str) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: it ships with the machine image; elsewhere install kubectl 1.22 or "
                    "newer from the Kubernetes project's apt repository (scripts/setup says so too)")
    proc = subprocess.run([kubectl, "kustomize", str(PACKAGING / "k8s" / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, kustomize(request.param)


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def probed_port(probe_spec: Doc) -> str:
    if "httpGet" in probe_spec:
        return str(probe_spec["httpGet"]["port"])
    command = probe_spec["exec"]["command"]
    return str(command[command.index("--port") + 1])


def test_strict_validation_refuses_a_misspelt_field() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
               "spec": {"ports": [{"port": 80}], "selectr": {"app": "x"}}}

    with pytest.raises(kubernetes_validate.ValidationError, match="selectr"):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def test_every_rendered_document_is_valid_kubernetes(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered

    assert {d["kind"] for d in docs} == {"Namespace", "ConfigMap", "Deployment", "Service", "Ingress"}
    for doc in docs:
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_each_overlay_sets_its_replicas_image_and_namespace(rendered: tuple[str, list[Doc]]) -> None:
    overlay, docs = rendered
    expected = OVERLAYS[overlay]

    replicas = tuple(one(docs, "Deployment", f"orchestra-{name}")["spec"]["replicas"] for name in ORCHESTRA_SERVICES)
    assert replicas == expected.replicas
    assert {c["image"] for _, c in containers(docs)} == {f"registry.example.com/devops-orchestra:{expected.tag}"}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {f"orchestra-{overlay}"}
    assert [c["args"] for name in ORCHESTRA_SERVICES for c in one(docs, "Deployment", f"orchestra-{name}")[
        "spec"]["template"]["spec"]["containers"]] == [["bot"], ["worker"],
                                                       ["webhooks", "--host", "0.0.0.0", "--port", "8080"]]


def test_the_ingress_sends_only_the_webhook_path_to_the_webhook_service(rendered: tuple[str, list[Doc]]) -> None:
    overlay, docs = rendered
    ingress, service = one(docs, "Ingress", "orchestra-webhooks"), one(docs, "Service", "orchestra-webhooks")
    webhooks = one(docs, "Deployment", "orchestra-webhooks")["spec"]["template"]

    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == OVERLAYS[overlay].host == ingress["spec"]["tls"][0]["hosts"][0]
    [path] = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/github/webhook", "Exact")
    assert path["backend"]["service"] == {"name": "orchestra-webhooks", "port": {"name": "http"}}
    [port] = service["spec"]["ports"]
    assert port["name"] == "http" and port["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= webhooks["metadata"]["labels"].items()
    assert webhooks["spec"]["containers"][0]["ports"] == [{"name": "http", "containerPort": 8080}]


def test_every_pod_runs_unprivileged_with_probes_and_resources(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered

    for deployment, container in containers(docs):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}
        assert {"/home/orchestra", "/tmp"} == {m["mountPath"] for m in container["volumeMounts"]}
        assert container["resources"]["requests"].keys() == container["resources"]["limits"].keys() == {
            "cpu", "memory"}
        assert "--ready" in container["readinessProbe"]["exec"]["command"]


def test_each_probe_targets_the_port_its_process_serves_metrics_on(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("orchestra-config"))
    metrics = int(config["data"]["ORCHESTRA_METRICS_PORT"])

    expected = {"bot": str(metrics), "worker": str(metrics + 1), "webhooks": "8080"}
    for name, port in expected.items():
        container = one(docs, "Deployment", f"orchestra-{name}")["spec"]["template"]["spec"]["containers"][0]
        live, ready = probed_port(container["livenessProbe"]), probed_port(container["readinessProbe"])
        assert (live, ready) in ((port, port), ("http", port)), name


def test_settings_come_from_the_config_map_and_secrets_from_a_secret_never_in_the_repository(
        rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    configs = {d["metadata"]["name"].rsplit("-", 1)[0]: d["data"] for d in docs if d["kind"] == "ConfigMap"}

    assert not any(d["kind"] == "Secret" for d in docs)
    assert all(key.startswith("ORCHESTRA_") for key in configs["orchestra-config"])
    assert configs["orchestra-worker"] == {"DOCKER_HOST": "tcp://docker-build-engine:2375"}
    for deployment, container in containers(docs):
        sources = container["envFrom"]
        assert {"secretRef": {"name": "orchestra-secrets"}} in sources
        uses_worker_config = any(s.get("configMapRef", {}).get("name", "").startswith("orchestra-worker")
                                 for s in sources)
        assert uses_worker_config == (deployment["metadata"]["name"] == "orchestra-worker")


def test_the_staging_overlay_posts_to_its_own_channel() -> None:
    config = next(d for d in kustomize("staging")
                  if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("orchestra-config"))

    assert config["data"]["ORCHESTRA_SLACK_CHANNEL"] == "#devops-orchestra-staging"
