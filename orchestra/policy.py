"""Who may do what, where: the trusted policy, and decisions from it.

Graduated autonomy: reading runs freely; deploying to non-production on request;
production (and anything the environment marks) needs an approval from an
allowed approver who is not the requester, before a deadline.

The rules are never read from the code being deployed. :func:`trusted_policy`
reads them from the operator's policy file (``ORCHESTRA_POLICY_FILE``) when one is
set, else from ``devops_orchestra.yaml`` on the served repository's default branch
(``origin/HEAD`` for a clone, the branch checked out in a served git folder, the
file itself in a plain folder). The checks turn a "no" into an error the requester
can act on; the ``identities:`` map makes a person's Slack and GitHub accounts one.
"""
from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from orchestra.errors import ConfigError, OrchestraError, PolicyDenied
from orchestra.settings import Settings

if TYPE_CHECKING:
    from orchestra.config import EnvironmentPolicy
    from orchestra.config.identities import Identities
    from orchestra.config.trusted import TrustedPolicy

logger = logging.getLogger(__name__)
CONFIG_NAMES = ("devops_orchestra.yaml", "devops_orchestra.yml")


def trusted_policy(repo: str, settings: Settings) -> TrustedPolicy:
    """The policy that governs runs of ``repo``; raises ConfigError when that source is invalid."""
    from orchestra.config import config_path
    from orchestra.config.trusted import PolicyFile, TrustedPolicy, parse_policy
    from orchestra.repos import local_copy

    if settings.policy_file is not None:
        try:
            text = settings.policy_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{settings.policy_file}: cannot read the policy file: {exc}"]) from exc
        return TrustedPolicy.of(parse_policy(text, filename=str(settings.policy_file)), str(settings.policy_file))
    local = _copy(repo, settings, local_copy)
    if not (local / ".git").exists():
        path = config_path(local)
        source = f"{local.name}/{path.name}"
        if not path.is_file():
            return TrustedPolicy.of(PolicyFile(), source)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot read the file: {exc}"]) from exc
        return TrustedPolicy.of(parse_policy(text, filename=str(path), whole_file=False), source)
    branch = default_branch(local)
    source = f"the {branch.removeprefix('origin/')} branch of {local.name}"
    for name in CONFIG_NAMES:
        found = _file_at(local, branch, name)
        if found is not None:
            filename = f"{local.name}@{branch.removeprefix('origin/')}:{name}"
            return TrustedPolicy.of(parse_policy(found, filename=filename, whole_file=False), source)
    return TrustedPolicy.of(PolicyFile(), source)  # no file on the default branch: the documented defaults


def _copy(repo: str, settings: Settings, local_copy: Callable[[str, Settings], Path]) -> Path:
    """The served copy; a clone that cannot be refreshed right now (another process pulling it, the remote
    unreachable) is read as it is rather than refusing every run."""
    try:
        return local_copy(repo, settings)
    except OrchestraError as exc:
        clone = settings.cache / "repos" / repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        if "://" in repo or repo.startswith("git@"):
            if (clone / ".git").exists():
                logger.warning("policy of %s read from its last fetched copy: %s", repo, exc)
                return clone
        raise


def default_branch(local: Path) -> str:
    """``origin/HEAD``'s branch in a clone, else the branch checked out; raises when there is neither."""
    for ref in ("refs/remotes/origin/HEAD", "HEAD"):
        proc = subprocess.run(["git", "-C", str(local), "symbolic-ref", "--quiet", "--short", ref],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    raise OrchestraError(f"{local.name} has no default branch to read the policy from (its HEAD is detached)",
                         hint="check out the default branch in the served copy, or set ORCHESTRA_POLICY_FILE")


def _file_at(local: Path, branch: str, name: str) -> str | None:
    proc = subprocess.run(["git", "-C", str(local), "show", f"{branch}:{name}"], capture_output=True,
                          timeout=30)
    if proc.returncode != 0:
        return None
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{local.name}@{branch}:{name}: not UTF-8 text ({exc})"]) from exc


def check_deploy(user: str, env: str, policy: EnvironmentPolicy, *, identities: Identities | None = None,
                 now: datetime | None = None, rollback: bool = False) -> None:
    """Raise :class:`PolicyDenied` when ``user`` may not deploy to ``env`` right now."""
    if policy.deployers and not any(same_person(identities, user, d) for d in policy.deployers):
        raise PolicyDenied(f"{_display(user)} may not deploy to {env}",
                           hint=f"deployers for {env}: {', '.join(policy.deployers)}")
    window = policy.frozen(now)
    if window is not None and not rollback:
        raise PolicyDenied(f"{env} is frozen: {window.describe()}",
                           hint="rollbacks are still allowed; lift the freeze in the trusted policy")


def check_approver(user: str, requesters: Sequence[str] | str, env: str, policy: EnvironmentPolicy, *,
                   identities: Identities | None = None) -> None:
    """Raise :class:`PolicyDenied` when ``user`` may not approve a run asked for (or pushed) by ``requesters``."""
    if policy.approvers and not any(same_person(identities, user, a) for a in policy.approvers):
        raise PolicyDenied(f"{_display(user)} may not approve deploys to {env}",
                           hint=f"approvers for {env}: {', '.join(policy.approvers)}")
    if policy.allow_self_approval:
        return
    for requester in [requesters] if isinstance(requesters, str) else requesters:
        if same_person(identities, user, requester):
            who = "" if requester.strip().lower() == user.strip().lower() else \
                f" ({_display(requester)}, who asked for or pushed it, is you)"
            raise PolicyDenied(f"you cannot approve your own request{who}",
                               hint="ask another approver (allow_self_approval is off for this environment)")


def same_person(identities: Identities | None, a: str, b: str) -> bool:
    """One person: the same account, or two accounts the trusted ``identities:`` map links."""
    if identities is None:
        return a.strip().lstrip("@").lower() == b.strip().lstrip("@").lower()
    return identities.same_person(a, b)


def _display(user: str) -> str:
    return f"<@{user}>" if user.startswith("U") and user.isalnum() else user
