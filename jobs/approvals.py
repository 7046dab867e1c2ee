"""Approvals: a parked run waits here for a human decision, never in a worker.

One request per run and stage. The first valid decision wins; a double click,
a second approver, an expired request or a request whose commit changed gets
a clear answer and starts nothing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis import Redis, WatchError

from jobs.workspace import source_dir
from orchestra import policy
from orchestra.config import EnvironmentPolicy
from orchestra.errors import NotFound, OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Audit, Run, RunStore

logger = logging.getLogger(__name__)

APPROVAL_KEY = "orchestra:approval:{run_id}"


class ApprovalRequest(BaseModel):
    run_id: str
    stage: str
    env: str
    requester: str
    approvers: list[str]
    commit: str | None
    requested_at: float
    deadline: float
    decision: str | None = None  # approved | rejected | expired
    decided_by: str | None = None
    decided_at: float | None = None


@dataclass(frozen=True)
class Decision:
    """What happened to a click: ``accepted`` False means nothing changed, ``message`` says why."""

    accepted: bool
    message: str
    request: ApprovalRequest | None = None


def environment_policy(run: Run, settings: Settings) -> EnvironmentPolicy:
    """The policy of the run's environment, read from the run's own checkout."""
    from orchestra.config import load_config

    return load_config(source_dir(settings, run)).environment(run.env)


def request(redis: Redis, run: Run, stage: str, env_policy: EnvironmentPolicy,
            timeout_s: float) -> ApprovalRequest:
    """Park ``run`` before ``stage`` and announce that it needs an approval."""
    now = time.time()
    req = ApprovalRequest(run_id=run.id, stage=stage, env=run.env, requester=run.requested_by,
                          approvers=list(env_policy.approvers), commit=run.commit, requested_at=now,
                          deadline=now + timeout_s)
    if not redis.set(APPROVAL_KEY.format(run_id=run.id), req.model_dump_json(), nx=True):
        return get(redis, run.id)
    EventBus(redis).emit(run.id, EventType.APPROVAL_REQUESTED, "orchestra", stage=stage, env=run.env,
                         requester=run.requested_by, approvers=req.approvers, commit=run.commit,
                         deadline=req.deadline)
    return req


def get(redis: Redis, run_id: str) -> ApprovalRequest:
    raw = redis.get(APPROVAL_KEY.format(run_id=run_id))
    if raw is None:
        raise NotFound(f"run {run_id} is not waiting for an approval")
    return ApprovalRequest.model_validate_json(raw)


def decide(run_id: str, *, user: str, approve: bool, redis: Redis, settings: Settings,
           commit: str | None = None) -> Decision:
    """Record one approver's decision, if it is valid and the first one."""
    try:
        req = get(redis, run_id)
        if req.decision is None:
            run = RunStore(redis).get(run_id)
            policy.check_approver(user, req.requester, run.env, environment_policy(run, settings))
    except OrchestraError as exc:
        Audit(redis).record("approval_refused", actor=user, run_id=run_id, reason=str(exc))
        return Decision(False, str(exc))
    if commit is not None and req.commit is not None and commit != req.commit:
        return Decision(False, f"the request changed (commit {req.commit[:7]} is waiting, not "
                               f"{commit[:7]}); nothing was started", req)
    return _record(redis, req, user=user, outcome="approved" if approve else "rejected")


def expire_if_due(redis: Redis, run_id: str, *, now: float | None = None) -> bool:
    """Expire a pending request past its deadline; True if it expired now."""
    try:
        req = get(redis, run_id)
    except NotFound:
        return False
    if req.decision is not None or (now or time.time()) < req.deadline:
        return False
    return _record(redis, req, user="orchestra", outcome="expired").accepted


def _record(redis: Redis, req: ApprovalRequest, *, user: str, outcome: str) -> Decision:
    key = APPROVAL_KEY.format(run_id=req.run_id)
    with redis.pipeline() as pipe:
        try:
            pipe.watch(key)
            raw: Any = pipe.get(key)
            current = ApprovalRequest.model_validate_json(raw)
            if current.decision is not None:
                return Decision(False, _already(current), current)
            if outcome != "expired" and time.time() >= current.deadline:
                pipe.unwatch()
                expire_if_due(redis, req.run_id)
                return Decision(False, "this approval request has expired; ask for a new deploy", current)
            decided = current.model_copy(update={"decision": outcome, "decided_by": user,
                                                 "decided_at": time.time()})
            pipe.multi()
            pipe.set(key, decided.model_dump_json())
            pipe.execute()
        except WatchError:
            return Decision(False, _already(get(redis, req.run_id)), None)
    _announce(redis, decided)
    return Decision(True, f"{outcome} by {user}", decided)


def _announce(redis: Redis, req: ApprovalRequest) -> None:
    event_type = {"approved": EventType.APPROVAL_GRANTED, "rejected": EventType.APPROVAL_REJECTED,
                  "expired": EventType.APPROVAL_EXPIRED}[req.decision or "expired"]
    EventBus(redis).emit(req.run_id, event_type, req.decided_by or "orchestra", stage=req.stage,
                         decided_by=req.decided_by, requester=req.requester, commit=req.commit)
    Audit(redis).record(f"approval_{req.decision}", actor=req.decided_by or "orchestra",
                        run_id=req.run_id, stage=req.stage, requester=req.requester)


def _already(req: ApprovalRequest) -> str:
    if req.decision == "expired":
        return "this approval request has expired; ask for a new deploy"
    return f"already {req.decision} by {req.decided_by}"
