"""The Kubernetes target (``runtime: kubernetes``): a Deployment per version behind one Service.

Blue-green switches the Service's selector once the new Deployment is available and keeps the old one
scaled for ``keep_previous``; canary and rolling move an HTTPRoute's weights when the environment names
one, else split by replica ratio (approximate, and said so). A failed deploy and a rollback put the
selector or weights back first, then scale. Readiness comes from the Deployment's status, crash logs
from its pods. What a release sends (:mod:`~agents.deploy.targets.kubernetes.release`) is validated
offline before anything is sent. The live state is kept in Redis like the local target's (what we did),
and the cluster is asked whether a release is available.
A restart (the always-on watch's) is what ``kubectl rollout restart`` does: the Deployment's pod template
gets the ``kubectl.kubernetes.io/restartedAt`` annotation, and the target waits until it is available again.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from redis import Redis

from agents.deploy import intent
from agents.deploy.intent import DeployIntent
from agents.deploy.strategies import Judge, Paused, Shift, go_on, health_judge
from agents.deploy.targets.base import DeployOutcome, Plan, Report, TrafficSplit
from agents.deploy.targets.kubernetes import manifests as m
from agents.deploy.targets.kubernetes.api import KubeApi
from agents.deploy.targets.kubernetes.readiness import crash_report, wait_available
from agents.deploy.targets.kubernetes.release import manifests_for
from agents.deploy.targets.kubernetes.traffic import Cluster, ReplicaSplit, RouteSplit, SelectorSplit, pods_for
from agents.deploy.targets.live import LiveTarget, move
from agents.deploy.targets.state import LiveState, Release, get_live, set_live
from orchestra.config.types import KubernetesCluster
from orchestra.errors import NotFound
from orchestra.locks import current_fence

logger = logging.getLogger(__name__)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # the annotation `kubectl rollout restart` sets


class KubernetesTarget(LiveTarget):
    """Deploy, undo and roll back services in one namespace of one cluster."""

    runtime = "kubernetes"
    restartable = True

    def __init__(self, api: KubeApi, redis: Redis, cluster: KubernetesCluster, *, replicas: dict[str, int],
                 sleep: Callable[[float], None] = time.sleep, secret_keys: list[str] | None = None,
                 secrets_manager: str = "env") -> None:
        self.api = api
        self.secret_keys = secret_keys or []
        self.secrets_manager = secrets_manager  # `kubernetes`: the platform's Secret <service>-secrets
        self.redis = redis
        self.cluster = cluster
        self.replicas = replicas  # per service, from services[].replicas
        self._sleeper = sleep
        self.waited_s = 0.0  # time spent sleeping between readiness polls (for benchmarks)

    def sleep(self, seconds: float) -> None:
        self.waited_s += seconds
        self._sleeper(seconds)

    # -- the interface ------------------------------------------------------------------------------

    def wait_healthy(self, release: Release, health: str, timeout: float | None = None) -> float:
        want = max(self._spec_replicas(release), 1)
        return wait_available(self.api, release, want, timeout or self.cluster.rollout_timeout, self.sleep)

    def logs(self, release: Release, lines: int = 50) -> str:
        return crash_report(self.api, release, lines)

    def scrape_address(self, release: Release) -> str | None:
        return None  # Prometheus in the cluster finds the pods by their labels (see README)

    def restart(self, state: LiveState, release: Release, health: str) -> str:
        """A rollout restart of the release's Deployment, then wait until it is available again."""
        if self.api.get("Deployment", release.container) is None:
            raise NotFound(f"the Deployment {release.container} was not found in {self._location()}",
                           hint=f"deploy {state.service} again, or `/rollback {state.service} {state.env}`")
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # RFC 3339, as kubectl writes it
        self.api.patch("Deployment", release.container,
                       {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}})
        took = self.wait_healthy(release, health)
        return f"rollout restart of the Deployment {release.container} ({RESTARTED_AT}={at}); " \
               f"available again in {took:.1f}s"

    def close(self) -> None:
        self.api.close()

    def deploy(self, plan: Plan, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """Validate, create the new Deployment, wait until available, then move traffic."""
        self._put_back_interrupted(plan, report)
        before = get_live(self.redis, plan.service, plan.env)
        state = before or self._new_state(plan)
        current = state.current
        if current and current.image == plan.image and state.weights.get(current.version) == 100 \
                and self._spec_replicas(current) > 0:
            return DeployOutcome(before, state, changed=False)
        first = self._initial_replicas(plan, current)
        sent = manifests_for(self.api, self.cluster, plan, first, current, secret_keys=self.secret_keys,
                             secrets_manager=self.secrets_manager)
        m.validate(sent, self.cluster.version)  # nothing is sent unless every manifest is valid
        if self.cluster.httproute:
            self.api.route(self._route(plan.service))  # the platform's route must exist before we start
        self._triggered(plan, state, report, where=f"kubernetes {state.location}")
        started = time.monotonic()
        new = Release(version=plan.version, image=plan.image, port=plan.port_hint or 5000,
                      container=m.name_for(plan.service, plan.version), run_id=plan.run_id, ref=plan.ref)
        if (fence := current_fence()) is not None:  # the intent first: a worker killed from here on is undone
            intent.starting(self.redis, fence, new=new, before=before, state=state, runtime=self.runtime,
                            health=plan.health, strategy=plan.strategy)
        try:
            for manifest in sent:
                self.api.apply(manifest)
            ready_s = wait_available(self.api, new, first, self.cluster.rollout_timeout, self.sleep)
            report("progress", {"phase": "healthy", "version": plan.version, "replicas": first,
                                "seconds": ready_s})
            verdicts = self._move(plan, state, new, judge, report)
        except Paused:
            raise  # a paced canary at its first weight: go_on carries it on in scheduled checks
        except Exception:
            self._undo(state, new)
            self._put_back(before, plan)
            raise
        after = self._promote(state, new, plan)
        return DeployOutcome(before, after, True, {"health": ready_s,
                                                   "total": round(time.monotonic() - started, 2)}, verdicts)

    def go_on(self, plan: Plan, left: DeployIntent, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """One scheduled check of the paced canary this run's intent ``left`` describes: judged and moved on
        (:func:`agents.deploy.strategies.go_on`), promoted at 100 %; Paused to look again; on a failure (or a
        cancel) the traffic goes back to the old release, the new Deployment is removed and the error raised."""
        state, new = left.state or self._new_state(plan), left.new
        live = get_live(self.redis, plan.service, plan.env)
        shift = self._shift(plan, state, new, left.old, report)
        applied = live is not None and live.weights.get(new.version) == _share(shift, left.weight)
        try:
            go_on(shift, plan.steps, judge or health_judge(self, new, plan.health), step=left.step,
                  weight=left.weight, since=left.updated_at, asked=left.asked, applied=applied, pause_s=plan.pause_s)
        except Paused:
            raise
        except Exception:
            self._undo(state, new)
            self._put_back(left.before, plan)
            raise
        after = self._promote(state, new, plan)
        now = intent.get(self.redis, plan.service, plan.env)
        return DeployOutcome(left.before, after, True, {}, list(now.verdicts) if now else [])

    # -- deploying ----------------------------------------------------------------------------------

    def _initial_replicas(self, plan: Plan, current: Release | None) -> int:
        """All replicas at once unless a canary by replica ratio grows the new version step by step."""
        if current is not None and plan.strategy != "blue-green" and not self.cluster.httproute:
            return 1
        return plan.replicas

    def _move(self, plan: Plan, state: LiveState, new: Release, judge: Judge | None,
              report: Report) -> list[dict[str, object]]:
        old, kept = state.current, state.previous
        shift = self._shift(plan, state, new, old, report)
        if isinstance(shift.traffic, ReplicaSplit) and old is not None and kept is not None \
                and kept.container not in (new.container, old.container):
            # the Service is about to select every version of the service: the release kept for an instant
            # rollback must not take a share of the traffic (it is deleted when this deploy ends)
            self.api.patch("Deployment", kept.container, {"spec": {"replicas": 0}})
        return move(shift, plan, judge or health_judge(self, new, plan.health))

    def _shift(self, plan: Plan, state: LiveState, new: Release, old: Release | None, report: Report) -> Shift:
        split = self._split(plan)
        approximate = isinstance(split, ReplicaSplit) and old is not None

        def on_shift(step: int, weights: dict[str, int]) -> None:
            set_live(self.redis, state.model_copy(update={"weights": weights, "approximate": approximate}))
            report("progress", {"phase": "shift", "step": step, "weights": weights, "url": state.url,
                                "approximate": approximate,
                                **({"note": "the split follows the ratio of ready pods, so it is approximate"}
                                   if approximate else {})})

        return Shift(split, new, old, on_shift, service=plan.service, env=plan.env, runtime=self.runtime)

    def _split(self, plan: Plan) -> TrafficSplit:
        cluster = self._cluster(plan.service, plan.env)
        if self.cluster.httproute:  # every strategy: the route is what clients reach
            return RouteSplit(cluster, self._route(plan.service))
        if plan.strategy == "blue-green":
            return SelectorSplit(cluster)
        return ReplicaSplit(cluster)

    def _route(self, service: str) -> str:
        assert self.cluster.httproute is not None
        return self.cluster.httproute.replace("{service}", service)

    def _cluster(self, service: str, env: str) -> Cluster:
        def wait(release: Release, replicas: int) -> float:
            return wait_available(self.api, release, replicas, self.cluster.rollout_timeout, self.sleep)
        return Cluster(self.api, service, env, self.replicas.get(service, 1), wait)

    def _promote(self, state: LiveState, new: Release, plan: Plan) -> LiveState:
        retired, kept = state.previous, state.current
        if retired is not None and retired.container not in (new.container, kept.container if kept else ""):
            self._retire(retired, state)
        return self._went_live(state, new, plan)

    # -- undoing ------------------------------------------------------------------------------------

    def _undo(self, state: LiveState, new: Release) -> None:
        """After a failed deploy: traffic back on what was live first, then the new version removed."""
        if state.current is not None:
            self._bring_back(state, state.current, "", beside=None)
        else:
            self._take_down(state)  # the first release never went live
        self._retire(new, state)

    def _bring_back(self, state: LiveState, release: Release, health: str, *,
                    beside: Release | None) -> Release:
        """Traffic back on ``release``: at once when it still has pods, else after scaling it up."""
        cluster = self._cluster(state.service, state.env)
        replicas = cluster.replicas
        if self.api.get("Deployment", release.container) is None:
            raise NotFound(f"the Deployment {release.container} of {state.service} {release.version} is gone "
                           f"from {state.location}", hint="deploy that version again instead")
        if self._spec_replicas(release) == 0:
            cluster.ready(release, replicas)
        if self.cluster.httproute:
            RouteSplit(cluster, self._route(state.service)).apply({release.version: 100})
        cluster.select(release.version)
        if self._spec_replicas(release) < replicas:
            cluster.scale(release, replicas)
        return release

    def _take_down(self, state: LiveState) -> None:
        self.api.delete("Service", state.service)

    def _running(self, release: Release) -> bool:
        return self._spec_replicas(release) > 0

    def _wind_down(self, release: Release) -> None:
        self.api.patch("Deployment", release.container, {"spec": {"replicas": 0}})

    def _retire(self, release: Release, state: LiveState) -> None:
        self.api.delete("Deployment", release.container)
        if self.api.get("Secret", m.secret_name(state.service, release.version)) is not None:
            self.api.delete("Secret", m.secret_name(state.service, release.version))
        if self.cluster.httproute:
            self.api.delete("Service", m.name_for(state.service, release.version))

    def _spec_replicas(self, release: Release) -> int:
        found = self.api.get("Deployment", release.container)
        return int(((found or {}).get("spec") or {}).get("replicas") or 0)

    def _location(self) -> str:
        return f"{self.cluster.context or 'in-cluster'}/{self.cluster.namespace}"

    def _new_state(self, plan: Plan) -> LiveState:
        return LiveState(service=plan.service, env=plan.env, edge_port=m.HTTP_PORT, edge_prefix="",
                         runtime=self.runtime, location=self._location(),
                         address=f"http://{plan.service}.{self.cluster.namespace}.svc.cluster.local")


def _share(shift: Shift, weight: int) -> int:
    """The new release's share of the traffic once ``weight`` is applied: a replica split gives what the
    ratio of pods makes of it (25 % of 3 replicas is 1 pod of 3: 33 %)."""
    if not isinstance(shift.traffic, ReplicaSplit) or shift.old is None or not 0 < weight < 100:
        return weight
    new_n, old_n = pods_for(weight, shift.traffic.cluster.replicas)
    return round(100 * new_n / (new_n + old_n))
