"""Approve or reject a parked run: only the environment's approvers decide, and the first decision wins."""
from __future__ import annotations

from redis import Redis

from handlers.reply import Reply, ReplyKind, Who
from jobs import approvals
from orchestra.settings import Settings
from orchestra.store import Audit


def handle(run_id: str, who: Who, *, approve: bool, commit: str | None, redis: Redis,
           settings: Settings) -> Reply:
    """Record the decision; a refused one (not an approver, too late, changed commit) is audited."""
    decision = approvals.decide(run_id, user=who.user, approve=approve, redis=redis, settings=settings,
                                commit=commit)
    if decision.accepted:
        return Reply(ReplyKind.ANSWER, decision.message)
    Audit(redis).record("approval_click_refused", actor=who.user, run_id=run_id, reason=decision.message)
    return Reply(ReplyKind.DENIED, decision.message)
