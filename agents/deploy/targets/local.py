"""The local target as a whole: releases as containers, an nginx edge per service and environment,
and the live state in Redis. Knows nothing about runs, locks or events (the deploy agent does)."""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from redis import Redis

from agents.deploy.strategies import Judge, Shift, blue_green, canary, health_judge, rolling
from agents.deploy.targets.docker import DockerTarget, free_port
from agents.deploy.targets.edge import Backend, Edge
from agents.deploy.targets.state import (
    LiveState,
    Release,
    all_live,
    clear_live,
    get_live,
    record_release,
    releases,
    set_live,
)
from orchestra.errors import NotFound

logger = logging.getLogger(__name__)

Report = Callable[[str, dict[str, Any]], None]  # ("triggered" | "progress", data)


@dataclass
class Plan:
    """One service's deploy: what to run, where, and how traffic moves."""

    service: str
    env: str
    image: str
    version: str
    run_id: str
    ref: str | None = None  # the branch or tag asked for, recorded on the release beside its version
    health: str = "/health"
    port_hint: int | None = None  # the configured port: the edge listens there when it is free
    extra_env: dict[str, str] = field(default_factory=dict)
    strategy: str = "blue-green"
    steps: list[int] = field(default_factory=lambda: [10, 50, 100])
    pause_s: float = 60.0
    keep_s: float = 3600.0


@dataclass
class DeployOutcome:
    """What a deploy changed, enough to undo it."""

    before: LiveState | None
    after: LiveState
    changed: bool
    timings: dict[str, float] = field(default_factory=dict)
    verdicts: list[dict[str, object]] = field(default_factory=list)


class LocalTarget:
    """Deploy, undo and roll back services on this machine."""

    def __init__(self, client: docker.DockerClient, redis: Redis, workdir: Path) -> None:
        self.docker = DockerTarget(client)
        self.redis = redis
        self.workdir = workdir

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
                                run_id=plan.run_id, extra_env=plan.extra_env, ref=plan.ref)
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

        def on_shift(step: int, weight: int) -> None:
            weights = {new.version: weight, **({old.version: 100 - weight} if old else {})}
            set_live(self.redis, state.model_copy(update={"weights": weights}))  # "what's running" mid-way
            report("progress", {"phase": "shift", "step": step, "weights": weights,
                                "ports": {new.version: new.port, **({old.version: old.port} if old else {})},
                                "url": state.url, "access_log": str(self.edge(state).access_log)})

        shift = Shift(self.edge(state), new, old, on_shift, service=plan.service, env=plan.env)
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
        target = self._rollback_target(state, to_version)
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

    def _rollback_target(self, state: LiveState, to_version: str | None) -> Release | None:
        assert state.current is not None
        if to_version is None:
            if state.last_action == "rollback":
                return None  # already rolled back: doing it again changes nothing
            if state.previous is None:
                raise NotFound(f"{state.service} in {state.env} has no previous version to roll back to")
            return state.previous
        if state.current.version == to_version:
            return None
        if state.previous is not None and state.previous.version == to_version:
            return state.previous
        for release in releases(self.redis, state.service, state.env):
            if release.version == to_version:
                return release
        known = ", ".join(r.version for r in releases(self.redis, state.service, state.env))
        raise NotFound(f"{state.service} {to_version} was never deployed in {state.env}",
                       hint=f"known versions: {known or 'none'}")

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
