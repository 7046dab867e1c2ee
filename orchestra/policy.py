"""Who may do what, where: decisions from the environment's policy in the config file.

Graduated autonomy: reading runs freely; deploying to non-production on request;
production (and anything the environment marks) needs an approval from an
allowed approver who is not the requester, before a deadline. The rules
themselves live on the config's ``EnvironmentPolicy``; this module turns a
"no" into an error the requester can act on.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from orchestra.errors import PolicyDenied

if TYPE_CHECKING:
    from orchestra.config import EnvironmentPolicy


def check_deploy(user: str, env: str, policy: EnvironmentPolicy, *, now: datetime | None = None,
                 rollback: bool = False) -> None:
    """Raise :class:`PolicyDenied` when ``user`` may not deploy to ``env`` right now."""
    if not policy.may_deploy(user):
        raise PolicyDenied(f"{_display(user)} may not deploy to {env}",
                           hint=f"deployers for {env}: {', '.join(policy.deployers)}")
    window = policy.frozen(now)
    if window is not None and not rollback:
        raise PolicyDenied(f"{env} is frozen: {window.describe()}",
                           hint="rollbacks are still allowed; lift the freeze in devops_orchestra.yaml")


def check_approver(user: str, requester: str, env: str, policy: EnvironmentPolicy) -> None:
    """Raise :class:`PolicyDenied` when ``user`` may not approve a run ``requester`` asked for."""
    if policy.may_approve(user, requester):
        return
    if policy.may_approve(user, f"{requester}-someone-else"):
        raise PolicyDenied("you cannot approve your own request",
                           hint="ask another approver (allow_self_approval is off for this environment)")
    raise PolicyDenied(f"{_display(user)} may not approve deploys to {env}",
                       hint=f"approvers for {env}: {', '.join(policy.approvers)}")


def _display(user: str) -> str:
    return f"<@{user}>" if user.startswith("U") and user.isalnum() else user
