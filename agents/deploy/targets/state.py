"""What is live where: per service and environment, the current and previous release and the weights.

Written by the deploy agent after every traffic change; read by rollback, by "what's running?"
answers and by the observe stage.
"""
from __future__ import annotations

import re
import time

from pydantic import BaseModel, Field
from redis import Redis

from orchestra.errors import NotFound
from orchestra.repos import SHORT_SHA
from orchestra.store import AUDIT_STREAM, audit_entry

LIVE_KEY = "orchestra:live:{service}:{env}"  # JSON LiveState
LIVE_INDEX = "orchestra:live"  # set of "service:env"
RELEASES_KEY = "orchestra:live:{service}:{env}:releases"  # list of Release JSON, newest first
RELEASES_KEPT = 20
_HEX = re.compile(r"[0-9a-f]+")


class Release(BaseModel):
    """One version of a service running in one environment."""

    version: str  # the image tag: a short SHA (or a plain folder's src- hash)
    image: str
    port: int
    container: str  # the container on the local target; the Deployment on kubernetes
    run_id: str
    ref: str | None = None  # the branch or tag it was deployed from, when one was asked for
    started_at: float = Field(default_factory=time.time)
    keep_until: float | None = None  # a previous release is kept running until then for instant rollback


class LiveState(BaseModel):
    """Where a service's traffic goes in one environment."""

    service: str
    env: str
    edge_port: int  # the local edge's port; the Service's port on kubernetes
    edge_prefix: str  # the local edge's nginx prefix; empty elsewhere
    current: Release | None = None
    previous: Release | None = None
    weights: dict[str, int] = Field(default_factory=dict)  # version -> percent of traffic
    last_action: str = "deploy"  # deploy | rollback
    run_id: str | None = None
    updated_at: float = Field(default_factory=time.time)
    runtime: str = "docker"  # which target serves it (services[].runtime)
    location: str | None = None  # where, beyond this host: "<context>/<namespace>" on kubernetes
    address: str | None = None  # the service's address when it is not the local edge
    approximate: bool = False  # the weights are a replica ratio, not an exact split

    @property
    def url(self) -> str:
        return self.address or f"http://127.0.0.1:{self.edge_port}"


def get_live(redis: Redis, service: str, env: str) -> LiveState | None:
    raw = redis.get(LIVE_KEY.format(service=service, env=env))
    return LiveState.model_validate_json(raw) if raw else None


def set_live(redis: Redis, state: LiveState, *, audit: str | None = None) -> LiveState:
    """Store ``state`` (stamped now). ``audit`` names the change (went_live, rolled_back, deploy_undone)
    for an audit entry written in the same transaction; a weight change mid-deploy has none."""
    state = state.model_copy(update={"updated_at": time.time()})
    key = LIVE_KEY.format(service=state.service, env=state.env)
    pipe = redis.pipeline(transaction=True)
    pipe.set(key, state.model_dump_json())
    pipe.sadd(LIVE_INDEX, f"{state.service}:{state.env}")
    if audit is not None:
        pipe.xadd(AUDIT_STREAM, audit_entry(audit, actor="orchestra", run_id=state.run_id, service=state.service,
                                            env=state.env, version=state.current.version if state.current else None,
                                            weights=state.weights, runtime=state.runtime))
    pipe.execute()
    return state


def clear_live(redis: Redis, service: str, env: str) -> None:
    """Forget a service's live state in ``env`` (its first release never went live)."""
    pipe = redis.pipeline(transaction=True)
    pipe.delete(LIVE_KEY.format(service=service, env=env))
    pipe.srem(LIVE_INDEX, f"{service}:{env}")
    pipe.execute()


def record_release(redis: Redis, service: str, env: str, release: Release) -> None:
    key = RELEASES_KEY.format(service=service, env=env)
    pipe = redis.pipeline(transaction=True)
    pipe.lpush(key, release.model_dump_json())
    pipe.ltrim(key, 0, RELEASES_KEPT - 1)
    pipe.execute()


def releases(redis: Redis, service: str, env: str) -> list[Release]:
    """Releases deployed to ``service`` in ``env``, newest first."""
    raw = redis.lrange(RELEASES_KEY.format(service=service, env=env), 0, -1)
    return [Release.model_validate_json(r) for r in raw]


def resolve_version(redis: Redis, service: str, env: str, name: str) -> str:
    """The version ``name`` means for ``service`` in ``env``: a version as it is, else the newest
    release deployed from the ref ``name``, else the one whose SHA ``name`` spells out in full;
    otherwise ``name`` (and the target says it was never deployed)."""
    history = releases(redis, service, env)
    for matches in (lambda r: r.version == name, lambda r: r.ref == name, lambda r: _longer_sha(name, r.version)):
        found = next((r.version for r in history if matches(r)), None)
        if found is not None:
            return found
    return name


def _longer_sha(name: str, version: str) -> bool:
    """``name`` is a longer (or full) SHA of the commit ``version`` is the short SHA of."""
    return len(version) == SHORT_SHA and _HEX.fullmatch(version) is not None \
        and _HEX.fullmatch(name.lower()) is not None and name.lower().startswith(version)


def all_live(redis: Redis) -> list[LiveState]:
    """Every service and environment with live state, sorted by name."""
    states = []
    for member in sorted(m.decode() if isinstance(m, bytes) else m for m in redis.smembers(LIVE_INDEX)):
        service, _, env = member.partition(":")
        state = get_live(redis, service, env)
        if state is not None:
            states.append(state)
    return states


def rollback_target(redis: Redis, state: LiveState, to_version: str | None) -> Release | None:
    """The release a rollback of ``state`` goes to (default: the previous one); None when it is
    already there (rolling back twice changes nothing). NotFound names the known versions."""
    assert state.current is not None
    if to_version is None:
        if state.last_action == "rollback":
            return None
        if state.previous is None:
            raise NotFound(f"{state.service} in {state.env} has no previous version to roll back to")
        return state.previous
    if state.current.version == to_version:
        return None
    if state.previous is not None and state.previous.version == to_version:
        return state.previous
    history = releases(redis, state.service, state.env)
    for release in history:
        if release.version == to_version:
            return release
    known = ", ".join(r.version for r in history)
    raise NotFound(f"{state.service} {to_version} was never deployed in {state.env}",
                   hint=f"known versions: {known or 'none'}")
