"""Paced canaries and intents before start on the Kubernetes target (the official client against kmock).

The deploy job returns after the canary's first weight (a replica split: 25 % of 3 replicas is 1 pod of 3);
the scheduled checks judge each step (the new Deployment still available) and move the pods on, read back
through the official client; a failing verdict puts the Service's selector back and deletes the new
Deployment. A worker SIGKILLed after the new Deployment is available and before the selector moves is
reconciled: the new Deployment deleted, the Service on the old version. tests/support/kmock.py plays the
Deployment controller and the kubelet.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from redis import Redis

from agents.deploy import intent
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from orchestra.settings import Settings
from tests.agents.deploy.test_paced_cloud import ENV, admitted, checks, killed_when_healthy, reconciled
from tests.support.kmock import CONTEXT, Controllers, MockCluster

NS = "shop"
IMAGES = {v: {"image": f"registry.example/shop-web:{v}", "version": v} for v in ("v1", "v2")}
Seen = tuple[dict[str, int], str | None]  # replicas per Deployment, the version the Service selects


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MockCluster]:
    mock = MockCluster(tmp_path).start()
    controllers = Controllers(mock, NS).start()
    yield mock
    controllers.stop()
    mock.stop()


@pytest.fixture
def apis(cluster: MockCluster) -> Iterator[tuple[k8s.AppsV1Api, k8s.CoreV1Api]]:
    api = k8s_config.new_client_from_config(config_file=str(cluster.workdir / "kubeconfig.yaml"), context=CONTEXT,
                                            persist_config=False)
    yield k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    api.close()


def _seen(apis: tuple[k8s.AppsV1Api, k8s.CoreV1Api]) -> Seen:
    apps, core = apis
    replicas = {d.metadata.name: d.spec.replicas for d in apps.list_namespaced_deployment(NS).items}
    return replicas, dict(core.read_namespaced_service("web", NS).spec.selector).get("orchestra.version")


def _v1_live(cluster: MockCluster, tmp_path: Path, settings: Settings, redis: Redis,
             apis: tuple[k8s.AppsV1Api, k8s.CoreV1Api]) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
deployment:
  strategy: canary
  canary: {{steps: [25, 50, 100], analysis_interval: 1s}}
  blue_green: {{keep_previous: 1h}}
  services:
    - {{name: web, runtime: kubernetes, port: 8080, replicas: 3}}
environments:
  staging:
    kubernetes:
      kubeconfig: {cluster.kubeconfig(NS)}
      context: {CONTEXT}
      namespace: {NS}
      rollout_timeout: 3s
""")
    assert deploy.run(admitted(repo, settings, redis, IMAGES["v1"], admit=False)).passed
    assert _seen(apis) == ({"web-v1": 3}, "v1")
    return repo


def test_a_kubernetes_canary_returns_after_its_first_weight_and_its_checks_move_the_pods_on(
        tmp_path: Path, cluster: MockCluster, apis: tuple[k8s.AppsV1Api, k8s.CoreV1Api], settings: Settings,
        redis: Redis) -> None:
    repo = _v1_live(cluster, tmp_path, settings, redis, apis)
    ctx = admitted(repo, settings, redis, IMAGES["v2"])
    first = deploy.run(ctx, pace=True)
    assert first.passed and first.later_s is not None and first.data["weight"] == 25, first.summary
    assert _seen(apis) == ({"web-v1": 2, "web-v2": 1}, None)  # the Service selects both versions' pods
    live = get_live(redis, "web", ENV)
    assert live is not None and live.weights == {"v2": 33, "v1": 67} and live.approximate
    result, seen = checks(ctx, first, lambda: _seen(apis))
    assert result.passed, result.summary
    # each check moved exactly one step: the approximate 33 % was not taken for a move never made
    assert seen == [({"web-v1": 1, "web-v2": 2}, None), ({"web-v1": 3, "web-v2": 3}, "v2")]
    assert result.data["verdicts"]["web"] == [{"step": 1, "weight": 25, "verdict": "pass"},
                                              {"step": 2, "weight": 50, "verdict": "pass"}]
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.version == "v2"
    assert intent.get(redis, "web", ENV) is None


def test_a_failing_verdict_in_a_kubernetes_check_selects_the_old_version_and_deletes_the_new(
        tmp_path: Path, cluster: MockCluster, apis: tuple[k8s.AppsV1Api, k8s.CoreV1Api], settings: Settings,
        redis: Redis) -> None:
    repo = _v1_live(cluster, tmp_path, settings, redis, apis)
    ctx = admitted(repo, settings, redis, IMAGES["v2"])
    first = deploy.run(ctx, pace=True)
    assert first.later_s is not None and _seen(apis) == ({"web-v1": 2, "web-v2": 1}, None)
    result, seen = checks(ctx, first, lambda: _seen(apis), judge=lambda step: "fail")
    assert not result.passed and "judged fail" in result.summary, result.summary
    assert seen == [({"web-v1": 3}, "v1")]
    live = get_live(redis, "web", ENV)
    assert live is not None and live.weights == {"v1": 100} and intent.get(redis, "web", ENV) is None


@pytest.mark.parametrize("at_once", [False, True], ids=["available", "right-after-its-intent"])
def test_a_worker_killed_after_the_new_deployment_is_available_before_traffic_moves_is_reconciled(
        tmp_path: Path, cluster: MockCluster, apis: tuple[k8s.AppsV1Api, k8s.CoreV1Api], settings: Settings,
        redis: Redis, at_once: bool) -> None:
    repo = _v1_live(cluster, tmp_path, settings, redis, apis)
    ctx = killed_when_healthy(repo, settings, redis, IMAGES["v2"], at_once=at_once)
    # the orphan the kill left (none when it was killed before sending anything)
    assert _seen(apis) == ({"web-v1": 3} if at_once else {"web-v1": 3, "web-v2": 1}, "v1")
    result = reconciled(ctx)
    assert "traffic stays on v1" in result.summary, result.summary
    assert _seen(apis) == ({"web-v1": 3}, "v1")
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.version == "v1"
