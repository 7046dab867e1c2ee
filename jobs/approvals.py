"""Approvals: a parked run waits here for a human decision, never in a worker.

One request per run and stage. The first valid decision wins; a double click,
a second approver, an expired request or a request whose commit changed gets
a clear answer and starts nothing. Who may approve comes from the trusted
policy (never from the run's own checkout), and nobody approves what they
asked for or pushed, under any of their linked identities.

The request is the record of the decision: who, when, which commit, which run
and stage. It is written in one Lua step together with the decision's event,
and the router resumes a run only when this record says "approved" for the
run's stage and commit (:func:`verify`): an event on the stream alone is no
authority.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis import Redis

from orchestra import policy
from orchestra.config import EnvironmentPolicy
from orchestra.errors import NotFound, OrchestraError, PolicyDenied
from orchestra.events import EVENTS_STREAM, RUN_STREAM, STREAM_MAXLEN, Event, EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Audit, Run, RunStore

logger = logging.getLogger(__name__)

APPROVAL_KEY = "orchestra:approval:{run_id}"
FORK_GATE = "fork"
FORK_ONLY_ON_GITHUB = ("this run waits for a collaborator with write permission to let a fork's code run: "
                       "they comment `/orchestra validate` on the pull request")
# Compare-and-set of the request and the decision's event on both streams, as one step.
_DECIDE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[2])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[3])
if not pcall(redis.call, 'XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], id, 'event', ARGV[3]) then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[3])
end
return id
"""


class ApprovalRequest(BaseModel):
    run_id: str
    stage: str
    env: str
    requester: str
    involved: list[str] = []  # others who may not approve it: the pull request's author
    approvers: list[str]
    commit: str | None
    requested_at: float
    deadline: float
    decision: str | None = None  # approved | rejected | expired
    decided_by: str | None = None
    decided_at: float | None = None
    gate: str = "environment"  # environment: the trusted policy's approvers; fork: see jobs.forks


@dataclass(frozen=True)
class Decision:
    """What happened to a click: ``accepted`` False means nothing changed, ``message`` says why."""

    accepted: bool
    message: str
    request: ApprovalRequest | None = None


def environment_policy(run: Run, settings: Settings) -> EnvironmentPolicy:
    """The gate of the run's environment, from the trusted policy (never from the run's checkout)."""
    return policy.trusted_policy(run.repo, settings).environment(run.env)


def request(redis: Redis, run: Run, stage: str, env_policy: EnvironmentPolicy | None, timeout_s: float, *,
            approvers: list[str] | None = None, gate: str = "environment", message: str = "") -> ApprovalRequest:
    """Park ``run`` before ``stage`` and announce that it needs an approval."""
    now = time.time()
    author = run.origin.get("pr_author")
    approvers = approvers if approvers is not None else list(env_policy.approvers if env_policy else [])
    req = ApprovalRequest(run_id=run.id, stage=stage, env=run.env, requester=run.requested_by,
                          involved=[f"github:{author}"] if author else [], approvers=approvers,
                          commit=run.commit, requested_at=now, deadline=now + timeout_s, gate=gate)
    if not redis.set(APPROVAL_KEY.format(run_id=run.id), req.model_dump_json(), nx=True):
        return get(redis, run.id)
    EventBus(redis).emit(run.id, EventType.APPROVAL_REQUESTED, "orchestra", stage=stage, env=run.env,
                         requester=run.requested_by, approvers=req.approvers, commit=run.commit,
                         deadline=req.deadline, gate=gate, **({"message": message} if message else {}))
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
        if req.gate == FORK_GATE:
            raise PolicyDenied(FORK_ONLY_ON_GITHUB)
        if req.decision is None:
            run = RunStore(redis).get(run_id)
            trusted = policy.trusted_policy(run.repo, settings)
            policy.check_approver(user, [req.requester, *req.involved], run.env, trusted.environment(run.env),
                                  identities=trusted.identities)
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


def record(redis: Redis, req: ApprovalRequest, *, user: str, outcome: str) -> Decision:
    """Decide ``req`` for ``user`` without a policy check (the caller has made its own)."""
    return _record(redis, req, user=user, outcome=outcome)


def _record(redis: Redis, req: ApprovalRequest, *, user: str, outcome: str) -> Decision:
    key = APPROVAL_KEY.format(run_id=req.run_id)
    raw: Any = redis.get(key)
    if raw is None:
        return Decision(False, f"run {req.run_id} is not waiting for an approval")
    current = ApprovalRequest.model_validate_json(raw)
    if current.decision is not None:
        return Decision(False, _already(current), current)
    if outcome != "expired" and time.time() >= current.deadline:
        expire_if_due(redis, req.run_id)
        return Decision(False, "this approval request has expired; ask for a new deploy", current)
    decided = current.model_copy(update={"decision": outcome, "decided_by": user, "decided_at": time.time()})
    event = Event(run_id=req.run_id, type=_EVENT[outcome], actor=user, data={
        "stage": decided.stage, "decided_by": user, "requester": decided.requester, "commit": decided.commit})
    written = redis.eval(_DECIDE, 3, key, EVENTS_STREAM, RUN_STREAM.format(run_id=req.run_id), raw,
                         decided.model_dump_json(), event.to_json(), STREAM_MAXLEN)
    if not written:  # someone decided in between
        return Decision(False, _already(get(redis, req.run_id)), None)
    Audit(redis).record(f"approval_{outcome}", actor=user, run_id=req.run_id, stage=decided.stage,
                        requester=decided.requester, commit=decided.commit)
    return Decision(True, f"{outcome} by {user}", decided)


def verify(redis: Redis, run: Run, stage: str, event: Event) -> str | None:
    """Why ``event`` (a decision) may not act on ``run`` parked before ``stage``; None when the record agrees."""
    wanted = next(outcome for outcome, kind in _EVENT.items() if kind == event.type)
    try:
        req = get(redis, run.id)
    except NotFound:
        return "no approval was requested for this run"
    if req.decision != wanted or req.decided_by is None or req.decided_at is None:
        return f"the approval record says {req.decision or 'nothing was decided yet'}, not {wanted}"
    if req.stage != stage or req.run_id != run.id:
        return f"the approval record is for {req.stage}, not {stage}"
    if req.commit != run.commit:
        return f"the approval record is for commit {str(req.commit)[:7]}, the run is at {str(run.commit)[:7]}"
    if event.data.get("decided_by") != req.decided_by:
        return f"the event names {event.data.get('decided_by')} but the record {req.decided_by}"
    return None


_EVENT = {"approved": EventType.APPROVAL_GRANTED, "rejected": EventType.APPROVAL_REJECTED,
          "expired": EventType.APPROVAL_EXPIRED}


def _already(req: ApprovalRequest) -> str:
    if req.decision == "expired":
        return "this approval request has expired; ask for a new deploy"
    return f"already {req.decision} by {req.decided_by}"
