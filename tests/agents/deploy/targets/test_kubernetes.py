"""The Kubernetes target end to end through the official client against kmock on loopback.

kmock stores objects and runs no controllers: tests/support/kmock.py plays the Deployment controller
and the kubelet through the same API. Nothing here ran against a real cluster.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.strategies import TrafficStep
from agents.deploy.targets.base import Plan
from agents.deploy.targets.kubernetes import KubernetesTarget
from agents.deploy.targets.kubernetes.api import KubeApi, connect
from agents.deploy.targets.kubernetes.manifests import InvalidManifest
from agents.deploy.targets.kubernetes.traffic import pods_for
from agents.deploy.targets.state import LiveState, Release, get_live, set_live
from orchestra.config import load_config
from orchestra.errors import ConfigError
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.kmock import CONTEXT, Controllers, MockCluster

NS = "shop"
IMAGES = {v: {"image": f"registry.example/shop-web:{v}", "version": v} for v in ("v1", "v2", "v3")}
CRASHING = "registry.example/shop-web:v3"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[MockCluster, Controllers]]:
    mock = MockCluster(tmp_path).start()
    controllers = Controllers(mock, NS, crashing={CRASHING}).start()
    yield mock, controllers
    controllers.stop()
    mock.stop()


def _config(tmp_path: Path, mock: MockCluster, *, strategy: str = "blue-green", extra: str = "",
            replicas: int = 3) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
deployment:
  strategy: {strategy}
  canary: {{steps: [25, 50, 100], analysis_interval: 0s}}
  blue_green: {{keep_previous: 1h}}
  services:
    - {{name: web, runtime: kubernetes, port: 8080, replicas: {replicas}}}
environments:
  staging:
    kubernetes:
      kubeconfig: {mock.kubeconfig(NS)}
      context: {CONTEXT}
      namespace: {NS}
      rollout_timeout: 3s
{extra}""")
    return repo


@pytest.fixture
def api(cluster: tuple[MockCluster, Controllers]) -> Iterator[tuple[k8s.AppsV1Api, k8s.CoreV1Api,
                                                                    k8s.CustomObjectsApi]]:
    client = k8s_config.new_client_from_config(config_file=str(cluster[0].workdir / "kubeconfig.yaml"),
                                               context=CONTEXT, persist_config=False)
    yield k8s.AppsV1Api(client), k8s.CoreV1Api(client), k8s.CustomObjectsApi(client)
    client.close()


def _ctx(repo: Path, settings: Settings, redis: Redis, strategy: str | None = None) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging", strategy=strategy)
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="deploy")


def _selector(core: k8s.CoreV1Api) -> dict[str, str]:
    return dict(core.read_namespaced_service("web", NS).spec.selector)


def _watch_selector(core: k8s.CoreV1Api, seen: list[tuple[float, str]], seconds: float) -> None:
    """Record (when, version) each time the Service's selector names another version, until it names v2."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        version = _selector(core).get("orchestra.version", "")
        if not seen or seen[-1][1] != version:
            seen.append((time.monotonic(), version))
        if version == "v2":
            return
        time.sleep(0.01)


def _replicas(apps: k8s.AppsV1Api) -> dict[str, int]:
    return {d.metadata.name: d.spec.replicas for d in apps.list_namespaced_deployment(NS).items}


def _events(ctx: AgentContext, kind: EventType) -> list[dict[str, Any]]:
    return [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == kind]


def test_blue_green_switches_the_selector_once_available_keeps_the_old_one_scaled_and_rolls_back(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, controllers = cluster
    apps, core, _ = api
    repo = _config(tmp_path, mock)
    first = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert first.passed, first.summary
    assert _selector(core) == {"orchestra.service": "web", "orchestra.env": "staging", "orchestra.version": "v1"}

    ctx = _ctx(repo, settings, redis)
    controllers.slow[IMAGES["v2"]["image"]] = 1.0  # its pods take a second to become available
    watched: list[tuple[float, str]] = []
    watcher = threading.Thread(target=_watch_selector, args=(core, watched, 10.0), daemon=True)
    watcher.start()
    second = deploy.run(ctx, images={"web": IMAGES["v2"]})
    assert second.passed, second.summary
    watcher.join()
    switched_at = next(t for t, version in watched if version == "v2")
    assert switched_at >= controllers.available_at["web-v2"]  # the selector moved only once v2 was available
    assert _selector(core)["orchestra.version"] == "v2"
    assert _replicas(apps) == {"web-v1": 3, "web-v2": 3}  # the old one kept scaled for keep_previous
    live = second.data["live"]["web"]
    assert live["where"] == f"kubernetes {CONTEXT}/{NS}" and live["weights"] == {"v2": 100}
    triggered = _events(ctx, EventType.DEPLOYMENT_TRIGGERED)[0]
    assert triggered["where"] == f"kubernetes {CONTEXT}/{NS}" and triggered["from_version"] == "v1"

    before = len(mock.requests())
    back = deploy.rollback(_ctx(repo, settings, redis), "web")
    assert back.passed and back.data["to_version"] == "v1", back.summary
    assert _selector(core)["orchestra.version"] == "v1"
    changes = [c for c in mock.changes()[-10:] if c in mock.requests()[before:]]
    assert changes and changes[0][1].endswith("/services/web")  # the selector first, nothing to scale
    assert deploy.rollback(_ctx(repo, settings, redis), "web").data["changed"] is False  # twice: no change


def test_a_rollback_to_a_wound_down_version_scales_it_up_before_the_selector_moves(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    apps, core, _ = api
    repo = _config(tmp_path, mock)
    for version in ("v1", "v2"):
        assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES[version]}).passed
    target = KubernetesTarget(KubeApi(connect(load_config(repo).environment("staging").kubernetes), NS), redis,
                              load_config(repo).environment("staging").kubernetes, replicas={"web": 3})
    state = get_live(redis, "web", "staging")
    assert state and state.previous and state.previous.keep_until
    assert target.reap(now=state.previous.keep_until + 1) == ["web-v1"]
    assert _replicas(apps)["web-v1"] == 0
    mark = len(mock.requests())
    assert deploy.rollback(_ctx(repo, settings, redis), "web").passed
    changes = [c for c in mock.requests()[mark:] if c[0] == "PATCH"]
    assert changes[0][1].endswith("/deployments/web-v1") and changes[-1][1].endswith("/services/web")
    assert _replicas(apps)["web-v1"] == 3 and _selector(core)["orchestra.version"] == "v1"
    target.close()


def test_canary_by_replica_ratio_says_the_split_is_approximate(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    apps, core, _ = api
    repo = _config(tmp_path, mock, strategy="canary", replicas=4)
    for version in ("v0", "v1"):  # blue-green: v0 stays scaled for an instant rollback
        images = {"web": {"image": f"registry.example/shop-web:{version}", "version": version}}
        assert deploy.run(_ctx(repo, settings, redis, "blue-green"), images=images).passed
    assert _replicas(apps) == {"web-v0": 4, "web-v1": 4}
    seen: list[tuple[int, dict[str, int], dict[str, str]]] = []

    def judge(step: TrafficStep) -> str:
        assert step.runtime == "kubernetes"
        seen.append((step.weight, _replicas(apps), _selector(core)))
        return "pass"

    ctx = _ctx(repo, settings, redis)
    result = deploy.run(ctx, images={"web": IMAGES["v2"]}, judge=judge, pause_s=0)
    assert result.passed, result.summary
    # the kept v0 takes no share once the Service selects every version of the service
    assert [(w, r) for w, r, _ in seen] == [(25, {"web-v0": 0, "web-v1": 3, "web-v2": 1}),
                                            (50, {"web-v0": 0, "web-v1": 2, "web-v2": 2})]
    assert all("orchestra.version" not in sel for _, _, sel in seen)  # both versions behind one Service
    shifts = [e for e in _events(ctx, EventType.DEPLOYMENT_PROGRESS) if e.get("phase") == "shift"]
    assert shifts[0]["approximate"] is True and "approximate" in shifts[0]["note"]
    assert shifts[0]["weights"] == {"v2": 25, "v1": 75}
    assert _selector(core)["orchestra.version"] == "v2" and _replicas(apps) == {"web-v1": 4, "web-v2": 4}


def test_a_failed_canary_step_puts_the_selector_back_first_then_removes_the_new_version(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    apps, core, _ = api
    repo = _config(tmp_path, mock, strategy="canary", replicas=4)
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    mark = len(mock.requests())
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v2"]},
                        judge=lambda step: "fail", pause_s=0)
    assert not result.passed and "judged fail" in result.summary
    undo = [c for c in mock.requests()[mark:] if c[0] in ("PATCH", "DELETE")]
    last_select = max(i for i, c in enumerate(undo) if c[1].endswith("/services/web"))
    assert undo[last_select + 1:] == [  # the old version back to full size, then the new one removed
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/web-v1"),
        ("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/web-v2")]
    assert _selector(core)["orchestra.version"] == "v1" and _replicas(apps) == {"web-v1": 4}
    state = get_live(redis, "web", "staging")
    assert state and state.current and state.current.version == "v1" and state.weights == {"v1": 100}


def _route(custom: k8s.CustomObjectsApi) -> dict[str, Any]:
    return dict(custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes",
                                                    "web-route"))


def test_canary_with_an_httproute_moves_exact_weights(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    apps, core, custom = api
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web-route"},
        "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"matches": [{"path": {"value": "/"}}]}]}})
    repo = _config(tmp_path, mock, strategy="canary", extra="      httproute: \"{service}-route\"\n")
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    weights: list[dict[str, int]] = []

    def judge(step: TrafficStep) -> str:
        refs = _route(custom)["spec"]["rules"][0]["backendRefs"]
        weights.append({r["name"]: r["weight"] for r in refs})
        return "pass"

    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v2"]}, judge=judge, pause_s=0).passed
    assert weights == [{"web-v1": 75, "web-v2": 25}, {"web-v1": 50, "web-v2": 50}]
    rule = _route(custom)["spec"]["rules"][0]
    assert {r["name"]: r["weight"] for r in rule["backendRefs"]} == {"web-v1": 0, "web-v2": 100}
    assert rule["matches"] == [{"path": {"value": "/"}}] and _route(custom)["spec"]["parentRefs"]
    assert core.read_namespaced_service("web-v2", NS).spec.selector["orchestra.version"] == "v2"
    assert _replicas(apps) == {"web-v1": 3, "web-v2": 3}

    assert deploy.rollback(_ctx(repo, settings, redis), "web").passed
    assert {r["name"]: r["weight"] for r in _route(custom)["spec"]["rules"][0]["backendRefs"]} == {"web-v1": 100}


def test_a_missing_httproute_is_named_and_nothing_is_changed(
        tmp_path: Path, cluster: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    repo = _config(tmp_path, mock, strategy="canary", extra="      httproute: web-route\n")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "HTTPRoute web-route does not exist in namespace shop" in result.summary
    assert mock.changes() == []


def test_a_deployment_that_never_becomes_available_fails_with_its_crash_log_and_the_old_one_keeps_traffic(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    apps, core, _ = api
    repo = _config(tmp_path, mock)
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v3"]})
    assert not result.passed
    error = result.data["error"]
    assert "web-v3 stopped progressing" in error and "ProgressDeadlineExceeded" in error
    assert "CrashLoopBackOff" in error and "4 restarts" in error and "DATABASE_URL is not set" in error
    assert _selector(core)["orchestra.version"] == "v1" and _replicas(apps) == {"web-v1": 3}
    state = get_live(redis, "web", "staging")
    assert state and state.current and state.current.version == "v1"


def test_the_rollout_deadline_ends_a_wait_the_cluster_never_answers(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, controllers = cluster
    controllers.stuck_after_s = 3600  # the cluster never says it gave up: our own deadline must
    repo = _config(tmp_path, mock)
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v3"]})
    assert not result.passed and "was not available within 3s: 0/3 pods available" in result.data["error"]
    assert _replicas(api[0]) == {}  # the first release never went live: nothing is left behind
    assert [s.metadata.name for s in api[1].list_namespaced_service(NS).items] == []
    assert get_live(redis, "web", "staging") is None


def test_a_refused_call_names_it_with_its_status_and_what_to_grant_and_undoes_what_was_created(
        tmp_path: Path, cluster: Any, api: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    mock.emulator[f"post /api/v1/namespaces/{NS}/services"] << 403  # RBAC: may create Deployments only
    repo = _config(tmp_path, mock)
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed
    assert "the Kubernetes API refused create Service in namespace shop: HTTP 403" in result.data["error"]
    assert "grant it get/list/create/patch/delete on deployments, services and pods" in result.data["error"]
    assert ("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/web-v1") in mock.changes()
    assert get_live(redis, "web", "staging") is None


@pytest.mark.parametrize("weight,replicas,pods", [(10, 4, (1, 3)), (25, 4, (1, 3)), (50, 4, (2, 2)),
                                                  (90, 4, (3, 1)), (10, 1, (1, 1)), (99, 10, (9, 1))])
def test_a_replica_ratio_keeps_at_least_one_pod_of_each_version(weight: int, replicas: int,
                                                                 pods: tuple[int, int]) -> None:
    assert pods_for(weight, replicas) == pods


def _target(repo: Path, redis: Redis, **cluster: Any) -> KubernetesTarget:
    settings = load_config(repo).environment("staging").kubernetes.model_copy(update=cluster)
    return KubernetesTarget(KubeApi(connect(settings), NS), redis, settings, replicas={"web": 3})


def test_a_manifest_that_fails_validation_sends_nothing(
        tmp_path: Path, cluster: Any, redis: Redis) -> None:
    mock, _ = cluster
    repo = _config(tmp_path, mock)
    # The config only produces strings; the target does not rely on its caller for that.
    plan = Plan(service="web", env="staging", image="registry.example/shop-web:v1", version="v1", run_id="r1",
                extra_env={"WORKERS": 4})  # type: ignore[dict-item]
    with pytest.raises(InvalidManifest, match=r"Deployment web-v1 is not valid for Kubernetes 1.32: "
                                              r"spec.template.spec.containers.0.env.\d+.value: 4 is not of type"):
        _target(repo, redis).deploy(plan, judge=None, report=lambda kind, data: None)
    with pytest.raises(InvalidManifest, match="no schema to validate against Kubernetes 1.24: .* knows 1.25"):
        _target(repo, redis, version="1.24").deploy(
            Plan(service="web", env="staging", image="i:v1", version="v1", run_id="r1"), judge=None,
            report=lambda kind, data: None)
    with pytest.raises(InvalidManifest, match=r"label orchestra.version='v1;rm -rf' is not a valid"):
        _target(repo, redis).deploy(
            Plan(service="web", env="staging", image="i:v1", version="v1;rm -rf", run_id="r1"), judge=None,
            report=lambda kind, data: None)
    assert mock.changes() == []


@pytest.mark.parametrize("runtime", ["ec3", "kubernets"])
def test_a_runtime_without_a_target_is_refused_naming_what_is_supported(tmp_path: Path, runtime: str) -> None:
    (tmp_path / "devops_orchestra.yaml").write_text(
        f"project: {{name: shop}}\ndeployment:\n  services:\n    - {{name: web, runtime: {runtime}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert "`docker` (containers on this host behind nginx), `kubernetes`" in str(caught.value)
    if runtime == "kubernets":
        assert "did you mean `kubernetes`" in str(caught.value)


def test_an_unreadable_kubeconfig_fails_the_deploy_with_what_to_set(
        tmp_path: Path, cluster: Any, settings: Settings, redis: Redis) -> None:
    mock, _ = cluster
    repo = _config(tmp_path, mock)
    text = (repo / "devops_orchestra.yaml").read_text().replace(str(mock.kubeconfig(NS)), str(tmp_path / "nope"))
    (repo / "devops_orchestra.yaml").write_text(text)
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "cannot use the kubeconfig" in result.summary
    assert "kubernetes.kubeconfig" in result.data["hint"]


@pytest.mark.parametrize("settings_text,problem", [
    ("{version: 1.30}", "must be quoted, e.g. \"1.32\" (YAML reads 1.30 as the number 1.3)"),
    ("{version: \"v1.3x\"}", "is not a Kubernetes version"),
    ("{namspace: shop}", "namspace"),
    ("{httproute: \"Web Route\"}", "is not a valid name"),
])
def test_kubernetes_settings_that_cannot_act_are_refused(tmp_path: Path, settings_text: str, problem: str) -> None:
    (tmp_path / "devops_orchestra.yaml").write_text(
        "project: {name: shop}\ndeployment:\n  services:\n    - {name: web, runtime: kubernetes}\n"
        f"environments:\n  staging:\n    kubernetes: {settings_text}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert problem in str(caught.value) and "environments.staging.kubernetes" in str(caught.value)


def test_kubernetes_releases_are_left_to_the_cluster_prometheus_and_local_ones_are_listed(
        tmp_path: Path, cluster: Any, settings: Settings, redis: Redis) -> None:
    from agents.observability.live import live_targets, step_targets

    mock, _ = cluster
    repo = _config(tmp_path, mock, strategy="canary", replicas=2)
    seen: list[TrafficStep] = []
    for version in ("v1", "v2"):
        assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES[version]}, pause_s=0,
                          judge=lambda step: seen.append(step) or "pass").passed
    local = Release(version="a1", image="i:a1", port=41234, container="c", run_id="r")
    set_live(redis, LiveState(service="api", env="staging", edge_port=8080, edge_prefix="/x", current=local))
    assert seen and step_targets(seen[0]) == []  # no file_sd entry for a pod: kubernetes_sd finds it
    assert [(t.service, t.address) for t in live_targets(_ctx(repo, settings, redis))] == [("api", "127.0.0.1:41234")]
