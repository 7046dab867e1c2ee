"""Pull requests from forks: static analysis only, until a collaborator lets that commit's code run.

A fork's validation run parks before its first stage that runs the repository's code (the tests),
with an approval request of the ``fork`` gate. Only a collaborator with write permission opens it,
by commenting ``/orchestra validate`` on the pull request; the allowance names the head commit,
so a new push parks again and needs a new comment. Slack's Approve button does not open it.
"""
from __future__ import annotations

from redis import Redis

from jobs import approvals
from orchestra.errors import NotFound
from orchestra.events import as_text
from orchestra.store import Run, RunStatus, RunStore

ALLOWED_KEY = "orchestra:fork-allowed:{repo}#{pr}@{sha}"
WAIT_S = 7 * 24 * 3600  # how long a fork's run (and an allowance) waits for the other
STATIC_STAGES = frozenset({"analyze"})  # stages that read the code without running it
WHO = "a collaborator with write permission (`/orchestra validate` on the pull request)"
WAITING = ("This pull request comes from a fork, so only static analysis ran. Its code (the tests) runs once a "
           "collaborator with write permission comments `/orchestra validate` on commit {sha}; a new push "
           "needs a new `/orchestra validate`.")


def is_fork(run: Run) -> bool:
    return bool(run.origin.get("fork"))


def runs_code(stage: str) -> bool:
    return stage not in STATIC_STAGES


def park(redis: Redis, run: Run, stage: str) -> approvals.ApprovalRequest:
    """Ask for a collaborator's `/orchestra validate`; one already given for this commit opens it at once."""
    req = approvals.request(redis, run, stage, None, WAIT_S, approvers=[WHO], gate=approvals.FORK_GATE,
                            message=WAITING.format(sha=(run.commit or "")[:7]))
    allowed_by = redis.get(_key(run.origin.get("repo"), run.origin.get("pr"), run.commit))
    if allowed_by is not None and req.decision is None:
        approvals.record(redis, req, user=as_text(allowed_by), outcome="approved")
    return req


def allow(redis: Redis, *, repo: str, pr: int, sha: str, user: str) -> list[str]:
    """``user`` (checked for write permission by the caller) lets ``sha`` of ``repo#pr`` run its code.

    Returns the ids of the parked runs this opened; a run at that commit that is not parked yet opens
    when it parks. Runs at any other commit stay parked.
    """
    redis.set(_key(repo, pr, sha), user, ex=WAIT_S)
    opened = []
    for run in active_runs(redis, repo=repo, pr=pr, sha=sha):
        if run.status != RunStatus.AWAITING_APPROVAL:
            continue
        try:
            req = approvals.get(redis, run.id)
        except NotFound:
            continue  # parking right now: it will find the allowance
        if req.gate == approvals.FORK_GATE and req.commit == sha and req.decision is None:
            if approvals.record(redis, req, user=user, outcome="approved").accepted:
                opened.append(run.id)
    return opened


def active_runs(redis: Redis, *, repo: str, pr: int, sha: str) -> list[Run]:
    """Unfinished fork runs of ``repo#pr`` at ``sha``."""
    return [r for r in RunStore(redis).active() if is_fork(r) and r.origin.get("repo") == repo
            and r.origin.get("pr") == pr and r.commit == sha]


def allowed(redis: Redis, run: Run, stage: str) -> bool:
    """May ``stage`` of ``run`` run the repository's code? (Checked again by the worker before it starts.)"""
    if not is_fork(run) or not runs_code(stage):
        return True
    try:
        req = approvals.get(redis, run.id)
    except NotFound:
        return False
    return req.gate == approvals.FORK_GATE and req.decision == "approved" and req.commit == run.commit


def _key(repo: object, pr: object, sha: object) -> str:
    return ALLOWED_KEY.format(repo=repo, pr=pr, sha=sha)
