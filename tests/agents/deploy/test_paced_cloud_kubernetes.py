"""Paced canaries and intents before start on the Kubernetes target (the official client against kmock).

The deploy job returns after the canary's first weight (a replica split: 25 % of 3 replicas is 1 pod of 3);
the scheduled checks judge each step (the new Deployment still available) and move the pods on, read back
through the official client; a failing verdict puts the Service's selector back and deletes the new
Deployment. A worker SIGKILLed after the new Deployment is available and before the selector moves is
reconciled: the new Deployment deleted, the Service on the old version. tests/support/kmock.py plays the
Deployment controller and the kubelet.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from agents.deploy import intent
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from jobs.dispatch import dispatch
from jobs.graph import DEPLOY, Graph
from jobs.queue import stage_queue
from jobs.router import Router
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import RunStatus, RunStore
from tests.agents.deploy.test_paced_cloud import ENV, admitted, checks, killed_when_healthy, reconciled
from tests.jobs.conftest import orchestra_env
from tests.support.kmock import CONTEXT, Controllers, MockCluster
from tests.support.services import wait_for

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
observability: {{tools: []}}
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


def test_with_one_real_worker_and_router_the_canary_holds_the_worker_only_in_short_checks(
        tmp_path: Path, cluster: MockCluster, apis: tuple[k8s.AppsV1Api, k8s.CoreV1Api], settings: Settings,
        redis: Redis) -> None:
    repo = _v1_live(cluster, tmp_path, settings, redis, apis)
    (repo / "devops_orchestra.yaml").write_text((repo / "devops_orchestra.yaml").read_text()
                                                .replace("analysis_interval: 1s", "analysis_interval: 2s"))
    stop = threading.Event()
    router = threading.Thread(target=Router(redis, settings, graph=Graph((replace(DEPLOY, approval=False),)),
                                            name="paced-k8s").run, args=(stop,), daemon=True)
    router.start()
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=orchestra_env(settings),
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = dispatch(Intent(kind=IntentKind.DEPLOY, service="web", services=["web"], env=ENV, strategy="canary",
                              user="U0ALICE"), redis=redis, settings=settings, repo=repo,
                       graph=Graph((replace(DEPLOY, approval=False),)))
        EventBus(redis).emit(run.id, EventType.BUILD_READY, "build", images={"web": IMAGES["v2"]}, passed=True)
        wait_for(lambda: RunStore(redis).get(run.id).status.finished, timeout=40, interval=0.05, what="the run")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=15)
        stop.set()
        router.join(timeout=10)
    assert RunStore(redis).get(run.id).status == RunStatus.SUCCEEDED
    events = EventBus(redis).replay(run.id)
    shifts = [e.data["weights"] for e in events if e.data.get("phase") == "shift"]
    assert shifts == [{"v2": 33, "v1": 67}, {"v2": 67, "v1": 33}, {"v2": 100, "v1": 0}]
    began = [e.ts for e in events if e.type == EventType.STAGE_STARTED]
    assert len(began) == 1  # one deploy job, then checks
    assert _seen(apis) == ({"web-v1": 3, "web-v2": 3}, "v2")
    assert intent.get(redis, "web", ENV) is None
    jobs = [Job.fetch(j, connection=redis, serializer=JSONSerializer)
            for j in FinishedJobRegistry(queue=stage_queue(redis)).get_job_ids()]
    held = {j.id: (j.ended_at - j.started_at).total_seconds() for j in jobs
            if j.meta.get("run_id") == run.id and j.ended_at and j.started_at}
    checks = [t for j, t in held.items() if j.startswith("check-")]
    wall = events[-1].ts - began[0]
    print(f"the run held the worker {sum(held.values()):.2f}s of {wall:.2f}s in {len(held)} jobs (checks: "
          f"{sorted(round(c, 2) for c in checks)}; each scales pods and waits until they are available)")
    assert len(checks) >= 2 and wall - sum(held.values()) >= 2 * 2.0 * 0.95  # both 2 s pauses left it free
