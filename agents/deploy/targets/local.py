"""The local target as a whole: releases as containers, an nginx edge per service and environment,
and the live state in Redis. Knows nothing about runs, locks or events (the deploy agent does)."""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from redis import Redis

from agents.deploy import intent
from agents.deploy.intent import DeployIntent
from agents.deploy.strategies import Judge, Paused, Shift, go_on, health_judge
from agents.deploy.targets.base import DeployOutcome, Plan, Report
from agents.deploy.targets.docker import HEALTH_TIMEOUT_S, DockerTarget, container_name, free_port
from agents.deploy.targets.edge import Backend, Edge
from agents.deploy.targets.live import LiveTarget, move
from agents.deploy.targets.state import LiveState, Release, all_live, get_live, set_live
from orchestra.errors import NotFound
from orchestra.locks import current_fence

logger = logging.getLogger(__name__)


@dataclass
class EdgeSplit:
    """Traffic split by the nginx edge's upstream weights: exact."""

    edge: Edge

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        backends = [Backend(new.port, new.version, weight)]
        if old is not None:
            backends.insert(0, Backend(old.port, old.version, 100 - weight))
        self.edge.apply(backends)
        return {new.version: weight, **({old.version: 100 - weight} if old else {})}


__all__ = ["DeployOutcome", "EdgeSplit", "LocalTarget", "Plan", "Report"]


class LocalTarget(LiveTarget):
    """Deploy, undo and roll back services on this machine (``runtime: docker``)."""

    runtime = "docker"
    restartable = True
    RESTART_HEALTH_S = 30.0

    def __init__(self, client: docker.DockerClient, redis: Redis, workdir: Path, *,
                 owns_client: bool = False) -> None:
        self.docker = DockerTarget(client)
        self.redis = redis
        self.workdir = workdir
        self._owns_client = owns_client

    def wait_healthy(self, release: Release, health: str, timeout: float = HEALTH_TIMEOUT_S) -> float:
        return self.docker.wait_healthy(release, health, timeout)

    def logs(self, release: Release, lines: int = 50) -> str:
        return self.docker.logs(release, lines)

    def scrape_address(self, release: Release) -> str | None:
        return f"127.0.0.1:{release.port}"

    def restart(self, state: LiveState, release: Release, health: str) -> str:
        """Restart the release's container in place (same port, same edge weight), then its health check."""
        try:
            container = self.docker.client.containers.get(release.container)
        except docker.errors.NotFound as exc:
            raise NotFound(f"the container {release.container} was not found on this host",
                           hint=f"deploy {state.service} again, or `/rollback {state.service} {state.env}`") from exc
        container.restart(timeout=5)
        took = self.docker.wait_healthy(release, health, timeout=self.RESTART_HEALTH_S)
        return f"restarted the container {release.container}; healthy again in {took:.1f}s"

    def close(self) -> None:
        if self._owns_client:
            self.docker.client.close()

    def edge(self, state: LiveState) -> Edge:
        return Edge(Path(state.edge_prefix), state.edge_port, name=f"{state.service}-{state.env}")

    def deploy(self, plan: Plan, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """Start the new release, health-check it, then move traffic with the plan's strategy."""
        self._put_back_interrupted(plan, report)
        before = get_live(self.redis, plan.service, plan.env)
        state = before or self._new_state(plan)
        if state.current and state.current.image == plan.image and self.docker.running(state.current) \
                and state.weights.get(state.current.version) == 100:
            return DeployOutcome(before, state, changed=False)
        self._triggered(plan, state, report)
        started = time.monotonic()
        if (fence := current_fence()) is not None:  # the intent first: a worker killed from here on is undone
            planned = Release(version=plan.version, image=plan.image, port=0, run_id=plan.run_id, ref=plan.ref,
                              container=container_name(plan.service, plan.env, plan.version))
            intent.starting(self.redis, fence, new=planned, before=before, state=state, runtime=self.runtime,
                            health=plan.health, strategy=plan.strategy)
        new = self.docker.start(service=plan.service, env=plan.env, image=plan.image, version=plan.version,
                                run_id=plan.run_id, extra_env={**plan.extra_env, **plan.secrets}, ref=plan.ref)
        try:
            health_s = self.docker.wait_healthy(new, plan.health)
            report("progress", {"phase": "healthy", "version": plan.version, "port": new.port,
                                "seconds": health_s})
            verdicts = self._move(plan, state, new, judge, report)
        except Paused:
            raise  # a paced canary at its first weight: go_on carries it on in scheduled checks
        except Exception:
            self._undo_traffic(state, new)
            self._put_back(before, plan)
            raise
        after = self._promote(state, new, plan)
        return DeployOutcome(before, after, True, {"health": health_s,
                                             "total": round(time.monotonic() - started, 2)}, verdicts)

    def go_on(self, plan: Plan, left: DeployIntent, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """One scheduled check of the paced canary this run's intent ``left`` describes: judged and moved on
        (:func:`agents.deploy.strategies.go_on`), promoted at 100 %; Paused to look again; on a failure (or a
        cancel) the traffic goes back to the old release and the error is raised, as in :meth:`deploy`."""
        state, new = left.state or self._new_state(plan), left.new
        live = get_live(self.redis, plan.service, plan.env)
        applied = live is not None and live.weights.get(new.version) == left.weight
        shift = self._shift(plan, state, new, left.old, report)
        try:
            go_on(shift, plan.steps, judge or health_judge(self.docker, new, plan.health), step=left.step,
                  weight=left.weight, since=left.updated_at, asked=left.asked, applied=applied, pause_s=plan.pause_s)
        except Paused:
            raise
        except Exception:
            self._undo_traffic(state, new)
            self._put_back(left.before, plan)
            raise
        after = self._promote(state, new, plan)
        now = intent.get(self.redis, plan.service, plan.env)
        return DeployOutcome(left.before, after, True, {}, list(now.verdicts) if now else [])

    def _move(self, plan: Plan, state: LiveState, new: Release, judge: Judge | None,
              report: Report) -> list[dict[str, object]]:
        old = state.current if state.current and self.docker.running(state.current) else None
        shift = self._shift(plan, state, new, old, report)
        return move(shift, plan, judge or health_judge(self.docker, new, plan.health))

    def _shift(self, plan: Plan, state: LiveState, new: Release, old: Release | None, report: Report) -> Shift:
        def on_shift(step: int, weights: dict[str, int]) -> None:
            set_live(self.redis, state.model_copy(update={"weights": weights}))  # "what's running" mid-way
            report("progress", {"phase": "shift", "step": step, "weights": weights,
                                "ports": {new.version: new.port, **({old.version: old.port} if old else {})},
                                "url": state.url, "access_log": str(self.edge(state).access_log)})

        return Shift(EdgeSplit(self.edge(state)), new, old, on_shift, service=plan.service, env=plan.env)

    def _undo_traffic(self, state: LiveState, new: Release) -> None:
        """After a failed deploy: all traffic back on what was live, the new release removed."""
        if state.current is not None and self.docker.running(state.current):
            self.edge(state).apply([Backend(state.current.port, state.current.version, 100)])
        elif state.current is None:
            self.edge(state).stop()
        self.docker.remove(new.container)

    def _promote(self, state: LiveState, new: Release, plan: Plan) -> LiveState:
        retired, kept = state.previous, state.current
        if retired is not None and retired.container not in (new.container, kept.container if kept else ""):
            self.docker.remove(retired.container)
        return self._went_live(state, new, plan)

    # -- the hooks of LiveTarget ------------------------------------------------------------------------

    def _bring_back(self, state: LiveState, release: Release, health: str, *,
                    beside: Release | None) -> Release:
        """Restarted if it was stopped, health-checked, then all the edge's weight on it."""
        release = self.docker.restart(release, service=state.service, env=state.env)
        self.docker.wait_healthy(release, health, timeout=30)
        self.edge(state).apply([Backend(release.port, release.version, 100)]
                               + ([Backend(beside.port, beside.version, 0)] if beside else []))
        return release

    def _retire(self, release: Release, state: LiveState) -> None:
        self.docker.remove(release.container)

    def _take_down(self, state: LiveState) -> None:
        self.edge(state).stop()

    def _forget(self, state: LiveState) -> None:
        pass  # the local live state keeps its edge's port and prefix for the next deploy

    def _owns(self, state: LiveState) -> bool:
        return True  # a kept container of any live state still running on this machine is wound down

    def _running(self, release: Release) -> bool:
        return self.docker.running(release)

    def _wind_down(self, release: Release) -> None:
        self.docker.stop(release)

    def _new_state(self, plan: Plan) -> LiveState:
        taken = {s.edge_port for s in all_live(self.redis)}
        port = plan.port_hint if plan.port_hint and plan.port_hint not in taken \
            and not _listening(plan.port_hint) else free_port()
        prefix = self.workdir / "edge" / f"{plan.service}-{plan.env}"
        return LiveState(service=plan.service, env=plan.env, edge_port=port, edge_prefix=str(prefix))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
