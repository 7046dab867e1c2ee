"""Past its guard period the always-on watch restarts the unhealthy release through its deploy target's hook:
on Kubernetes a rollout restart of the release's Deployment (against kmock, through the official client),
on ECS a new deployment of the colour's ECS service (against moto_server, through boto3).

The releases are put live by real deploys; the anomaly is handed to :func:`anomaly.act` as the always-on
check would hand it (the check itself, its timers and a real Prometheus are tested with Docker in
test_always_on.py). Nothing here ran against a real cluster or AWS itself.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.targets.awslambda import LambdaTarget
from agents.deploy.targets.kubernetes.target import RESTARTED_AT
from agents.deploy.targets.live import LiveTarget
from agents.deploy.targets.state import LiveState, get_live
from agents.observability.anomaly import act
from agents.observability.policy import policy_for
from agents.observability.watch import Breach, WatchedRelease
from orchestra.config import load_config
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.kmock import CONTEXT, Controllers, MockCluster
from tests.support.moto import Ecs, Platform, aws_env, client, lambda_function, moto_server, platform, reset

NS = "shop"
IMAGES = {v: {"image": f"registry.example/shop-web:{v}", "version": v} for v in ("v1", "v2")}
LAMBDA_IMAGES = {v: {"image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-web:{v}", "version": v}
                 for v in ("v1", "v2")}


def _ctx(repo: Path, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="deploy")


def _deployed(repo: Path, settings: Settings, redis: Redis, *,
              images: dict[str, dict[str, str]] = IMAGES) -> tuple[AgentContext, LiveState]:
    """v1 then v2 deployed for real: v2 is live, v1 kept."""
    for version in ("v1", "v2"):
        ctx = _ctx(repo, settings, redis)
        result = deploy.run(ctx, images={"web": images[version]})
        assert result.passed, result.summary
    live = get_live(redis, "web", "staging")
    assert live is not None and live.current is not None and live.current.version == "v2"
    return ctx, live


def _anomaly(ctx: AgentContext, live: LiveState) -> str:
    """An error rate of 30% held for a minute, two hours after v2 went live (its guard is 1h)."""
    assert live.current is not None
    now = live.current.started_at + 7200
    rel = WatchedRelease("web", "staging", "v2", "v1")
    return act(ctx, live, rel, ("error_rate", 0.3, 0.05, Breach(since=now - 60, values=[0.3, 0.3])),
               policy_for(ctx), now=now)


def _alerts(ctx: AgentContext, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in ctx.bus.replay(ctx.run.id) if e.data.get("kind") == kind]


# -- Kubernetes -------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[MockCluster, Controllers]]:
    mock = MockCluster(tmp_path).start()
    controllers = Controllers(mock, NS).start()
    yield mock, controllers
    controllers.stop()
    mock.stop()


def _k8s_repo(tmp_path: Path, mock: MockCluster) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
deployment:
  strategy: blue-green
  services:
    - {{name: web, runtime: kubernetes, port: 8080, replicas: 2}}
observability: {{guard: 1h}}
environments:
  staging:
    kubernetes:
      kubeconfig: {mock.kubeconfig(NS)}
      context: {CONTEXT}
      namespace: {NS}
      rollout_timeout: 3s
""")
    return repo


def _changes(mock: MockCluster, mark: int) -> list[tuple[str, str]]:
    """The requests of the product since its ``mark``-th that change the cluster."""
    return [r for r in mock.requests()[mark:] if r[0] in ("POST", "PATCH", "PUT", "DELETE")]


def _apps(mock: MockCluster) -> Any:
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=str(mock.workdir / "kubeconfig.yaml"), context=CONTEXT,
                                            persist_config=False)
    return k8s.AppsV1Api(api)


def test_kubernetes_rollout_restarts_the_release_s_deployment_and_waits_until_it_is_available(
        tmp_path: Path, cluster: tuple[MockCluster, Controllers], settings: Settings, redis: Redis) -> None:
    mock, controllers = cluster
    ctx, live = _deployed(_k8s_repo(tmp_path, mock), settings, redis)
    apps = _apps(mock)
    # the unhealthy instance: v2's pods are down, and no controller brings new ones until the restart is sent
    controllers.stop()
    apps.patch_namespaced_deployment_status("web-v2", NS, {"status": {"availableReplicas": 0, "readyReplicas": 0}})
    mark = len(mock.requests())
    outcome: list[str] = []
    acting = threading.Thread(target=lambda: outcome.append(_anomaly(ctx, live)), daemon=True)
    acting.start()
    deadline = time.monotonic() + 5
    while not _changes(mock, mark) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the target is now waiting for the restarted pods
    assert acting.is_alive() and not outcome  # it does not call the release healthy while no pod is available
    back = Controllers(mock, NS).start()  # the Deployment controller rolls out the restarted pods
    started = time.monotonic()
    acting.join(5)
    back.stop()
    assert outcome == ["restarted"]
    assert _changes(mock, mark) == [("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/web-v2")]
    deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(NS).items}
    stamp = deployments["web-v2"].spec.template.metadata.annotations[RESTARTED_AT]
    assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 30
    assert RESTARTED_AT not in (deployments["web-v1"].spec.template.metadata.annotations or {})
    assert deployments["web-v2"].status.available_replicas == 2 and time.monotonic() - started < 5
    (anomaly,) = _alerts(ctx, "always_on_anomaly")
    assert anomaly["action"] == "restart" and "restarting web-v2 (kubernetes)" in anomaly["message"]
    (restart,) = _alerts(ctx, "always_on_restart")
    assert restart["restarted"] is True and restart["runtime"] == "kubernetes", restart["message"]
    assert "rollout restart of the Deployment web-v2" in restart["message"] and "available again" in restart["message"]
    assert get_live(redis, "web", "staging") == live  # the live state is as the deploy left it


def test_a_restart_whose_pods_never_come_back_is_a_loud_alert(
        tmp_path: Path, cluster: tuple[MockCluster, Controllers], settings: Settings, redis: Redis) -> None:
    mock, controllers = cluster
    ctx, live = _deployed(_k8s_repo(tmp_path, mock), settings, redis)
    controllers.crashing.add(IMAGES["v2"]["image"])  # its pods crash-loop from now on
    apps, deadline = _apps(mock), time.monotonic() + 5
    while apps.read_namespaced_deployment("web-v2", NS).status.available_replicas and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _anomaly(ctx, live) == "alerted"
    (anomaly,) = _alerts(ctx, "always_on_anomaly")  # the crash log is read where the release runs: its pods
    assert anomaly["crash"]["error"] == "RuntimeError: DATABASE_URL is not set"  # what the crashing pods print
    assert "CrashLoopBackOff" in anomaly["message"] and "error: RuntimeError" in anomaly["message"]
    (restart,) = _alerts(ctx, "always_on_restart")
    assert restart["restarted"] is False
    assert restart["message"].startswith("RESTART FAILED: could not restart web-v2 (web v2 in staging): ")
    assert "stopped progressing" in restart["message"] and "/rollback web staging" in restart["message"]


def test_kubernetes_a_deployment_that_no_longer_exists_is_not_restarted_and_nothing_is_touched(
        tmp_path: Path, cluster: tuple[MockCluster, Controllers], settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    ctx, live = _deployed(_k8s_repo(tmp_path, mock), settings, redis)
    _apps(mock).delete_namespaced_deployment("web-v2", NS)  # someone deleted it by hand
    mark = len(mock.requests())
    assert _anomaly(ctx, live) == "alerted"
    assert _changes(mock, mark) == []
    (restart,) = _alerts(ctx, "always_on_restart")
    assert restart["restarted"] is False
    assert restart["message"].startswith("RESTART FAILED: could not restart web-v2 (web v2 in staging): the "
                                         f"Deployment web-v2 was not found in {CONTEXT}/{NS}")


# -- ECS --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str) -> Iterator[Platform]:
    reset(moto_url)
    built = platform(moto_url)
    agent = Ecs(moto_url, built.cluster).start()
    with aws_env(moto_url):
        yield built
    agent.stop()


def _ecs_repo(tmp_path: Path, built: Platform) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
deployment:
  strategy: blue-green
  services:
    - {{name: web, runtime: ecs, port: 8080, replicas: 2}}
observability: {{guard: 1h}}
environments:
  staging:
    ecs:
      cluster: {built.cluster}
      region: us-east-1
      listener: {built.listener}
      subnets: [{built.subnet}]
      security_groups: [{built.security_group}]
      execution_role: {built.execution_role}
      rollout_timeout: 3s
""")
    return repo


def _services(built: Platform) -> dict[str, dict[str, Any]]:
    names = ["web-staging-blue", "web-staging-green"]
    found = client(built.url, "ecs").describe_services(cluster=built.cluster, services=names)["services"]
    return {s["serviceName"]: s for s in found if s["status"] == "ACTIVE"}


def test_ecs_forces_a_new_deployment_of_the_colour_s_service_holding_the_release(
        tmp_path: Path, aws: Platform, settings: Settings, redis: Redis) -> None:
    ctx, live = _deployed(_ecs_repo(tmp_path, aws), settings, redis)
    assert live.current is not None and live.current.container == "web-staging-green"
    before = _services(aws)
    assert _anomaly(ctx, live) == "restarted"
    after = _services(aws)
    green, blue = after["web-staging-green"], after["web-staging-blue"]
    assert green["deployments"][0]["id"] != before["web-staging-green"]["deployments"][0]["id"]  # a new deployment
    assert blue["deployments"][0]["id"] == before["web-staging-blue"]["deployments"][0]["id"]  # the kept one: no
    assert (green["taskDefinition"], green["desiredCount"]) == \
        (before["web-staging-green"]["taskDefinition"], before["web-staging-green"]["desiredCount"])
    (anomaly,) = _alerts(ctx, "always_on_anomaly")
    assert anomaly["action"] == "restart" and "restarting web-staging-green (ecs)" in anomaly["message"]
    (restart,) = _alerts(ctx, "always_on_restart")
    assert restart["restarted"] is True, restart["message"]
    assert "new deployment of the ECS service web-staging-green" in restart["message"]


def test_ecs_a_service_that_no_longer_exists_is_not_restarted_and_nothing_is_touched(
        tmp_path: Path, aws: Platform, settings: Settings, redis: Redis) -> None:
    ctx, live = _deployed(_ecs_repo(tmp_path, aws), settings, redis)
    ecs = client(aws.url, "ecs")
    ecs.delete_service(cluster=aws.cluster, service="web-staging-green", force=True)  # removed by hand
    blue = _services(aws)["web-staging-blue"]
    assert _anomaly(ctx, live) == "alerted"
    assert _services(aws) == {"web-staging-blue": blue}  # the other colour untouched, nothing created
    (restart,) = _alerts(ctx, "always_on_restart")
    assert restart["restarted"] is False
    assert restart["message"].startswith("RESTART FAILED: could not restart web-staging-green (web v2 in "
                                         "staging): the ECS service web-staging-green was not found in cluster shop")


def test_lambda_has_no_instance_to_restart_so_the_alert_says_a_person_must_look(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis) -> None:
    reset(moto_url)
    with aws_env(moto_url):
        lambda_function(moto_url, "web-staging")
        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "devops_orchestra.yaml").write_text("""
project: {name: shop}
deployment:
  services:
    - {name: web, runtime: lambda}
observability: {guard: 1h}
environments:
  staging:
    lambda: {region: us-east-1, alias: live, update_timeout: 5s}
""")
        ctx, live = _deployed(repo, settings, redis, images=LAMBDA_IMAGES)
        lam = client(moto_url, "lambda")
        alias = lam.get_alias(FunctionName="web-staging", Name="live")
        assert _anomaly(ctx, live) == "alerted"
        after = lam.get_alias(FunctionName="web-staging", Name="live")
        assert (after["FunctionVersion"], after.get("RoutingConfig")) == (alias["FunctionVersion"],
                                                                          alias.get("RoutingConfig"))
    (anomaly,) = _alerts(ctx, "always_on_anomaly")
    assert anomaly["action"] == "alert"
    assert "lambda releases have no instance to restart; a person must look" in anomaly["message"]
    assert not _alerts(ctx, "always_on_restart")
    assert LambdaTarget.restartable is False and LambdaTarget.restart is LiveTarget.restart  # the default hook
