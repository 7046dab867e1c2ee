"""The local target as a whole: releases as containers, an nginx edge per service and environment,
and the live state in Redis. Knows nothing about runs, locks or events (the deploy agent does)."""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from redis import Redis

from agents.deploy.strategies import Judge, Shift, blue_green, canary, health_judge, rolling
from agents.deploy.targets.base import DeployOutcome, Plan, Report
from agents.deploy.targets.docker import HEALTH_TIMEOUT_S, DockerTarget, free_port
from agents.deploy.targets.edge import Backend, Edge
from agents.deploy.targets.state import (
    LiveState,
    Release,
    all_live,
    clear_live,
    get_live,
    record_release,
    rollback_target,
    set_live,
)
from orchestra.errors import NotFound

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


class LocalTarget:
    """Deploy, undo and roll back services on this machine (``runtime: docker``)."""

    runtime = "docker"

    def __init__(self, client: docker.DockerClient, redis: Redis, workdir: Path, *,
                 owns_client: bool = False) -> None:
        self.docker = DockerTarget(client)
        self.redis = redis
        self.workdir = workdir
        self._owns_client = owns_client

    def wait_healthy(self, release: Release, health: str, timeout: float = HEALTH_TIMEOUT_S) -> float:
        return self.docker.wait_healthy(release, health, timeout)

    def live(self, service: str, env: str) -> LiveState | None:
        return get_live(self.redis, service, env)

    def logs(self, release: Release, lines: int = 50) -> str:
        return self.docker.logs(release, lines)

    def scrape_address(self, release: Release) -> str | None:
        return f"127.0.0.1:{release.port}"

    def close(self) -> None:
        if self._owns_client:
            self.docker.client.close()

    def edge(self, state: LiveState) -> Edge:
        return Edge(Path(state.edge_prefix), state.edge_port, name=f"{state.service}-{state.env}")

    def deploy(self, plan: Plan, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """Start the new release, health-check it, then move traffic with the plan's strategy."""
        before = get_live(self.redis, plan.service, plan.env)
        state = before or self._new_state(plan)
        if state.current and state.current.image == plan.image and self.docker.running(state.current) \
                and state.weights.get(state.current.version) == 100:
            return DeployOutcome(before, state, changed=False)
        report("triggered", {"service": plan.service, "env": plan.env, "version": plan.version, "ref": plan.ref,
                             "image": plan.image, "strategy": plan.strategy, "url": state.url,
                             "from_version": state.current.version if state.current else None,
                             "from_ref": state.current.ref if state.current else None})
        started = time.monotonic()
        new = self.docker.start(service=plan.service, env=plan.env, image=plan.image, version=plan.version,
                                run_id=plan.run_id, extra_env={**plan.extra_env, **plan.secrets}, ref=plan.ref)
        try:
            health_s = self.docker.wait_healthy(new, plan.health)
            report("progress", {"phase": "healthy", "version": plan.version, "port": new.port,
                                "seconds": health_s})
            verdicts = self._move(plan, state, new, judge, report)
        except Exception:
            self._undo_traffic(state, new)
            if before is not None:
                set_live(self.redis, before)
            else:
                clear_live(self.redis, plan.service, plan.env)
            raise
        after = self._promote(state, new, plan)
        return DeployOutcome(before, after, True, {"health": health_s,
                                             "total": round(time.monotonic() - started, 2)}, verdicts)

    def _move(self, plan: Plan, state: LiveState, new: Release, judge: Judge | None,
              report: Report) -> list[dict[str, object]]:
        old = state.current if state.current and self.docker.running(state.current) else None

        def on_shift(step: int, weights: dict[str, int]) -> None:
            set_live(self.redis, state.model_copy(update={"weights": weights}))  # "what's running" mid-way
            report("progress", {"phase": "shift", "step": step, "weights": weights,
                                "ports": {new.version: new.port, **({old.version: old.port} if old else {})},
                                "url": state.url, "access_log": str(self.edge(state).access_log)})

        shift = Shift(EdgeSplit(self.edge(state)), new, old, on_shift, service=plan.service, env=plan.env)
        judge = judge or health_judge(self.docker, new, plan.health)
        if plan.strategy == "canary":
            return canary(shift, plan.steps, judge, pause_s=plan.pause_s)
        if plan.strategy == "rolling":
            return rolling(shift, judge)
        blue_green(shift)
        return []

    def _undo_traffic(self, state: LiveState, new: Release) -> None:
        """After a failed deploy: all traffic back on what was live, the new release removed."""
        if state.current is not None and self.docker.running(state.current):
            self.edge(state).apply([Backend(state.current.port, state.current.version, 100)])
        elif state.current is None:
            self.edge(state).stop()
        self.docker.remove(new.container)

    def _promote(self, state: LiveState, new: Release, plan: Plan) -> LiveState:
        retired = state.previous
        previous = state.current.model_copy(update={"keep_until": time.time() + plan.keep_s}) \
            if state.current else None
        if retired is not None and retired.container not in (new.container, getattr(previous, "container", "")):
            self.docker.remove(retired.container)
        record_release(self.redis, plan.service, plan.env, new)
        return set_live(self.redis, state.model_copy(update={
            "current": new, "previous": previous, "weights": {new.version: 100},
            "last_action": "deploy", "run_id": plan.run_id}))

    def restore(self, outcome: DeployOutcome, health: str) -> None:
        """Undo a finished deploy of a group whose later member failed."""
        after = outcome.after
        if outcome.before is None or outcome.before.current is None:
            self.edge(after).stop()
        else:
            old = self.docker.restart(outcome.before.current, service=after.service, env=after.env)
            self.docker.wait_healthy(old, health, timeout=30)
            self.edge(after).apply([Backend(old.port, old.version, 100)])
        if after.current is not None:
            self.docker.remove(after.current.container)
        if outcome.before is not None:
            set_live(self.redis, outcome.before.model_copy(update={"last_action": "rollback"}))

    def rollback(self, service: str, env: str, *, to_version: str | None, health: str, keep_s: float,
                 run_id: str) -> tuple[LiveState, bool]:
        """All traffic back on ``to_version`` (default: the previous release); (state, changed?)."""
        state = get_live(self.redis, service, env)
        if state is None or state.current is None:
            raise NotFound(f"nothing of {service} is deployed in {env}", hint="deploy it first")
        target = rollback_target(self.redis, state, to_version)
        if target is None:
            return state, False
        target = self.docker.restart(target, service=service, env=env)
        self.docker.wait_healthy(target, health, timeout=30)
        current = state.current
        self.edge(state).apply([Backend(target.port, target.version, 100),
                                Backend(current.port, current.version, 0)])
        kept = current.model_copy(update={"keep_until": time.time() + keep_s})
        return set_live(self.redis, state.model_copy(update={
            "current": target, "previous": kept, "weights": {target.version: 100},
            "last_action": "rollback", "run_id": run_id})), True

    def reap(self, now: float | None = None) -> list[str]:
        """Stop previous releases whose keep window is over; returns their containers."""
        now = time.time() if now is None else now
        stopped = []
        for state in all_live(self.redis):
            previous = state.previous
            if previous and previous.keep_until and previous.keep_until < now and self.docker.running(previous):
                self.docker.stop(previous)
                stopped.append(previous.container)
        return stopped

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
