"""secrets.keys reach the application, from each manager, and never anything else.

Against kmock (Kubernetes) and moto_server (Secrets Manager) on loopback, through the deploy stage:
the values go into a Secret the pods reference (never into the Deployment), a missing key stops the
deploy naming it before anything is sent, and the values are held for redaction (events, logs). ECS
(ARNs in the task definition) and Lambda (refused) are in test_ecs.py and test_lambda.py.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from redis import Redis

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from orchestra.config import load_config
from orchestra.errors import ConfigError
from orchestra.events import EventBus
from orchestra.redaction import forget_all, redact
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.docker_services import DockerEnv
from tests.support.kmock import CONTEXT, Controllers, MockCluster
from tests.support.moto import aws_env, client, moto_server
from tests.support.sample_apps import plain_app
from tests.support.services import free_port

NS = "shop"
VALUE = "postgres://shop:Zq8-ultra-secret-pw@db:5432/shop"
IMAGES = {v: {"image": f"registry.example/shop-web:{v}", "version": v} for v in ("v1", "v2")}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MockCluster]:
    mock = MockCluster(tmp_path).start()
    controllers = Controllers(mock, NS).start()
    forget_all()
    yield mock
    forget_all()
    controllers.stop()
    mock.stop()


@pytest.fixture
def core(cluster: MockCluster) -> Iterator[k8s.CoreV1Api]:
    api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig(NS)), context=CONTEXT,
                                            persist_config=False)
    yield k8s.CoreV1Api(api)
    api.close()


def _repo(tmp_path: Path, mock: MockCluster, manager: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
secrets: {{manager: {manager}, keys: [DATABASE_URL]}}
deployment:
  services:
    - {{name: web, runtime: kubernetes, port: 8080, replicas: 1, env: {{LOG_LEVEL: info}}}}
environments:
  staging:
    kubernetes: {{kubeconfig: {mock.kubeconfig(NS)}, context: {CONTEXT}, namespace: {NS}, rollout_timeout: 3s}}
""")
    return repo


def _ctx(repo: Path, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="deploy")


def _container(mock: MockCluster, version: str) -> dict[str, Any]:
    apps = k8s.AppsV1Api(k8s_config.new_client_from_config(config_file=str(mock.kubeconfig(NS)), context=CONTEXT,
                                                           persist_config=False))
    found = apps.api_client.sanitize_for_serialization(apps.read_namespaced_deployment(f"web-{version}", NS))
    return dict(found["spec"]["template"]["spec"]["containers"][0])


def _secret_values(core: k8s.CoreV1Api, name: str) -> dict[str, str]:
    found = core.api_client.sanitize_for_serialization(core.read_namespaced_secret(name, NS))
    if found.get("data"):
        return {k: base64.b64decode(v).decode() for k, v in found["data"].items()}
    return dict(found.get("stringData") or {})


def test_env_secrets_reach_the_pods_through_a_secret_and_nowhere_else(
        tmp_path: Path, cluster: MockCluster, core: k8s.CoreV1Api, settings: Settings, redis: Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", VALUE)
    repo = _repo(tmp_path, cluster, "env")
    ctx = _ctx(repo, settings, redis)
    result = deploy.run(ctx, images={"web": IMAGES["v1"]})
    assert result.passed, result.summary
    assert _secret_values(core, "web-v1-secrets") == {"DATABASE_URL": VALUE}
    container = _container(cluster, "v1")
    assert {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "web-v1-secrets", "key": "DATABASE_URL"}}} \
        in container["env"]
    assert {"name": "LOG_LEVEL", "value": "info"} in container["env"] and VALUE not in json.dumps(container)
    assert VALUE not in json.dumps([e.data for e in ctx.bus.replay(ctx.run.id)])
    assert redact(f"connecting to {VALUE}") == "connecting to [REDACTED]"  # held for every way out

    monkeypatch.setenv("DATABASE_URL", VALUE + "-rotated")
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v2"]}).passed
    assert _secret_values(core, "web-v2-secrets") == {"DATABASE_URL": VALUE + "-rotated"}
    assert _secret_values(core, "web-v1-secrets") == {"DATABASE_URL": VALUE}  # a rollback to v1 keeps its values


def test_a_key_missing_from_the_environment_stops_the_deploy_before_anything_is_sent(
        tmp_path: Path, cluster: MockCluster, settings: Settings, redis: Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = deploy.run(_ctx(_repo(tmp_path, cluster, "env"), settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed
    assert "secret DATABASE_URL is missing: not set in the bot's environment" in result.summary
    assert cluster.changes() == []


def test_aws_secrets_manager_values_reach_the_pods_and_a_missing_one_is_named(
        tmp_path: Path, cluster: MockCluster, core: k8s.CoreV1Api, settings: Settings, redis: Redis) -> None:
    repo = _repo(tmp_path, cluster, "aws_secrets_manager")
    with moto_server() as url, aws_env(url):
        result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
        assert not result.passed
        assert "secret DATABASE_URL is missing: no Secrets Manager secret staging/DATABASE_URL" in result.summary
        assert cluster.changes() == []
        client(url, "secretsmanager").create_secret(Name="staging/DATABASE_URL", SecretString=VALUE)
        ctx = _ctx(repo, settings, redis)
        assert deploy.run(ctx, images={"web": IMAGES["v1"]}).passed
    assert _secret_values(core, "web-v1-secrets") == {"DATABASE_URL": VALUE}
    assert VALUE not in json.dumps([e.data for e in ctx.bus.replay(ctx.run.id)])


def test_the_kubernetes_manager_uses_the_platforms_secret_and_names_a_key_it_lacks(
        tmp_path: Path, cluster: MockCluster, core: k8s.CoreV1Api, settings: Settings, redis: Redis) -> None:
    repo = _repo(tmp_path, cluster, "kubernetes")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "secret DATABASE_URL is missing: no Secret web-secrets exists" in result.summary
    core.create_namespaced_secret(NS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secrets"},
                                       "data": {"OTHER": base64.b64encode(b"x").decode()}})
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "the Secret web-secrets in namespace shop lacks it" in result.summary
    assert [c for c in cluster.changes() if "/secrets" not in c[1]] == []  # only the test's own Secret
    encoded = base64.b64encode(VALUE.encode()).decode()
    core.patch_namespaced_secret("web-secrets", NS, {"data": {"DATABASE_URL": encoded}})
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    env = _container(cluster, "v1")["env"]
    ref = {"secretKeyRef": {"name": "web-secrets", "key": "DATABASE_URL"}}
    assert {"name": "DATABASE_URL", "valueFrom": ref} in env
    assert [s.metadata.name for s in core.list_namespaced_secret(NS).items] == ["web-secrets"]


def test_a_failed_deploy_removes_the_versions_secret_with_its_deployment(
        tmp_path: Path, cluster: MockCluster, core: k8s.CoreV1Api, settings: Settings, redis: Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", VALUE)
    cluster.emulator[f"post /api/v1/namespaces/{NS}/services"] << 403
    result = deploy.run(_ctx(_repo(tmp_path, cluster, "env"), settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed
    assert ("DELETE", f"/api/v1/namespaces/{NS}/secrets/web-v1-secrets") in cluster.changes()


@pytest.mark.docker
def test_env_secrets_reach_the_local_containers_environment(
        tmp_path: Path, settings: Settings, redis: Redis, docker_env: DockerEnv,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", VALUE)
    forget_all()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "devops_orchestra.yaml").write_text(
        "project: {name: shop}\nsecrets: {keys: [DATABASE_URL]}\n"
        f"deployment:\n  services:\n    - {{name: web, port: {free_port()}}}\n")
    with docker_env.connected(stop_deployed_in=settings.workdir) as engine:
        built = build_service(engine, ServiceSpec("web", plain_app(tmp_path / "app"), 8000),
                              BuildRequest("shop", "s1", tmp_path / "out", Images(python=docker_env.base_image),
                                           push=False), settings=settings.with_(registry=docker_env.registry))
        ctx = _ctx(repo, settings, redis)
        result = deploy.run(ctx, client=engine, images={"web": {"image": built["image"], "version": "s1"}})
        assert result.passed, result.summary
        state = get_live(redis, "web", "staging")
        assert state and state.current
        assert f"DATABASE_URL={VALUE}" in engine.containers.get(state.current.container).attrs["Config"]["Env"]
    assert VALUE not in json.dumps([e.data for e in ctx.bus.replay(ctx.run.id)])
    assert redact(VALUE) == "[REDACTED]"
    forget_all()


@pytest.mark.parametrize("manager,problem", [
    ("vault", "not supported yet: secrets.manager `vault`"),
    ("azure_key_vault", "not supported yet"),
    ("aws_secret_manager", "did you mean `aws_secrets_manager`"),
])
def test_a_secrets_manager_that_cannot_act_is_refused(tmp_path: Path, manager: str, problem: str) -> None:
    (tmp_path / "devops_orchestra.yaml").write_text(
        f"project: {{name: shop}}\nsecrets: {{manager: {manager}, keys: [A]}}\n"
        "deployment:\n  services:\n    - {name: web}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert problem in str(caught.value) and "secrets.manager" in str(caught.value)


def test_the_operators_secrets_file_is_read_instead_of_the_environment_and_a_key_it_lacks_is_named(
        tmp_path: Path, cluster: MockCluster, core: k8s.CoreV1Api, settings: Settings, redis: Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "from-the-environment-not-used")
    secrets_file = tmp_path / "orchestra.secrets"
    secrets_file.write_text("# the operator's file\nOTHER=1\n")
    settings = settings.with_(secrets_file=secrets_file)
    repo = _repo(tmp_path, cluster, "env")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed
    assert f"secret DATABASE_URL is missing: not set in ORCHESTRA_SECRETS_FILE {secrets_file}" in result.summary
    assert cluster.changes() == []
    secrets_file.write_text(f"# the operator's file\nexport DATABASE_URL=\"{VALUE}\"\n")
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    assert _secret_values(core, "web-v1-secrets") == {"DATABASE_URL": VALUE}
    secrets_file.write_text(f"DATABASE_URL {VALUE}\n")  # a malformed line: named by number, value not shown
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v2"]})
    assert not result.passed and "line 1 is not KEY=value" in result.summary and VALUE not in result.summary
