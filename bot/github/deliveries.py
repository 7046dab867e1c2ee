"""GitHub deliveries in, typed values out. Pure: no network, Redis or clock.

Two steps. :func:`parse_delivery` reads a payload into a :class:`Push`, :class:`PullRequest`
or :class:`Comment` (or says why it is ignored, or raises :class:`Malformed`); it runs
inside the webhook answer. The ``*_intent`` functions turn those into an Intent once the
slow facts (the project's configuration, changed files, permissions) are known.
Branch names, titles and bodies are carried as data only; refs are replaced by the sha.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.config.graph import affected_services
from orchestra.intents import ENVIRONMENTS, Intent, IntentKind

PR_ACTIONS = ("opened", "synchronize", "reopened")
COMMAND_PREFIX = "/orchestra"
ENV_ALIASES = {"prod": "production", "stg": "staging", "stage": "staging", "dev": "development",
               "develop": "development"}
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_ZERO_SHA = "0" * 40


class Malformed(ValueError):
    """A payload that lacks what its event type must carry."""


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class Push:
    repo: str
    branch: str
    sha: str
    clone_url: str | None
    pusher: str
    changed_files: tuple[str, ...]
    url: str | None = None


@dataclass(frozen=True)
class PullRequest:
    repo: str
    number: int
    action: str
    sha: str
    head_repo: str | None
    author: str
    clone_url: str | None
    title: str = ""
    url: str | None = None


@dataclass(frozen=True)
class Command:
    """A parsed `/orchestra ...` line; ``error`` is set when it was not understood."""

    kind: IntentKind
    env: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Comment:
    repo: str
    number: int
    comment_id: int
    user: str
    command: Command
    clone_url: str | None = None
    url: str | None = None


Received = Push | PullRequest | Comment | Ignored


@dataclass(frozen=True)
class Facts:
    """What the handoff learned before building the intent."""

    changed_files: tuple[str, ...] = ()
    services: Mapping[str, str] = field(default_factory=dict)  # service name -> folder
    env: str | None = None


def parse_delivery(event: str, payload: Any) -> Received:
    """The part of a delivery the bot acts on; raises Malformed for partial payloads."""
    if not isinstance(payload, dict):
        raise Malformed("the payload is not a JSON object")
    if event == "push":
        return _parse_push(payload)
    if event == "pull_request":
        return _parse_pull_request(payload)
    if event == "issue_comment":
        return _parse_comment(payload)
    return Ignored(f"event {event!r} is not used (push, pull_request, issue_comment are)")


def _parse_push(p: dict[str, Any]) -> Received:
    ref, repo = _need(p, "ref", str), _repo_name(p)
    if not ref.startswith("refs/heads/"):
        return Ignored(f"push to {ref} is not a branch push")
    if p.get("deleted") or _need(p, "after", str) == _ZERO_SHA:
        return Ignored(f"branch {ref.removeprefix('refs/heads/')} was deleted")
    sha = _sha(p.get("after"))
    commits = p.get("commits") or []
    if not isinstance(commits, list):
        raise Malformed("`commits` must be a list")
    files: list[str] = []
    for commit in commits:
        for key in ("added", "modified", "removed"):
            files += [f for f in (commit.get(key) or []) if isinstance(f, str) and f not in files]
    pusher = (p.get("pusher") or {}).get("name") or _login(p.get("sender"), "sender")
    return Push(repo=repo, branch=ref.removeprefix("refs/heads/"), sha=sha,
                clone_url=_clone_url(p), pusher=str(pusher), changed_files=tuple(files),
                url=_text_or_none(p.get("compare")))


def _parse_pull_request(p: dict[str, Any]) -> Received:
    action = _need(p, "action", str)
    if action not in PR_ACTIONS:
        return Ignored(f"pull_request action {action!r} starts nothing ({', '.join(PR_ACTIONS)} do)")
    pr = _need(p, "pull_request", dict)
    head = _need(pr, "head", dict)
    head_repo = head.get("repo") or {}
    return PullRequest(repo=_repo_name(p), number=_number(p.get("number", pr.get("number"))),
                       action=action, sha=_sha(head.get("sha")), head_repo=head_repo.get("full_name"),
                       author=_login(pr.get("user"), "pull_request.user"), clone_url=_clone_url(p),
                       title=str(pr.get("title") or ""), url=_text_or_none(pr.get("html_url")))


def _parse_comment(p: dict[str, Any]) -> Received:
    action = _need(p, "action", str)
    issue, comment = _need(p, "issue", dict), _need(p, "comment", dict)
    if action != "created":
        return Ignored(f"issue_comment action {action!r} starts nothing (only new comments do)")
    if not issue.get("pull_request"):
        return Ignored("comment is on an issue, not a pull request")
    command = parse_command(str(comment.get("body") or ""))
    if command is None:
        return Ignored("comment has no /orchestra command")
    user = comment.get("user") or {}
    if str(user.get("type", "")).lower() == "bot":
        return Ignored("comments from bots start nothing")
    return Comment(repo=_repo_name(p), number=_number(issue.get("number")),
                   comment_id=_number(comment.get("id")), user=_login(user, "comment.user"),
                   command=command, clone_url=_clone_url(p), url=_text_or_none(comment.get("html_url")))


def parse_command(body: str) -> Command | None:
    """The first `/orchestra ...` line of a comment, or None when there is none."""
    for line in body.splitlines():
        words = line.strip().split()
        if words and words[0].lower() == COMMAND_PREFIX:
            return _command(words[1:])
    return None


def _command(words: list[str]) -> Command:
    verb = words[0].lower() if words else "help"
    if verb == "plan":  # the Terraform of the head commit, for staging unless an environment is named
        return Command(IntentKind.PLAN) if len(words) == 1 else _with_env(IntentKind.PLAN, words)
    if verb == "status":
        return Command(IntentKind.STATUS)
    if verb == "help":
        return Command(IntentKind.HELP)
    if verb == "validate":
        return Command(IntentKind.VALIDATE)
    if verb != "deploy":
        return Command(IntentKind.UNKNOWN, error=f"unknown command `{verb[:40]}`")
    if len(words) < 2:
        return Command(IntentKind.DEPLOY, error="say which environment: `/orchestra deploy staging`")
    return _with_env(IntentKind.DEPLOY, words)


def _with_env(kind: IntentKind, words: list[str]) -> Command:
    """`/orchestra <verb> <env>`: exactly one known environment (or its alias) after the verb."""
    env = ENV_ALIASES.get(words[1].lower(), words[1].lower())
    if len(words) > 2:
        return Command(kind, error=f"`/orchestra {kind.value}` takes one environment, "
                                   f"not `{' '.join(words[1:])[:60]}`")
    if env not in ENVIRONMENTS:
        return Command(kind, error=f"unknown environment `{words[1][:40]}`; use one of {', '.join(ENVIRONMENTS)}")
    return Command(kind, env=env)


def push_intent(push: Push, facts: Facts, *, delivery: str) -> Intent | Ignored:
    """A push-to-deploy run, or why this push starts none."""
    if facts.env is None:
        return Ignored(f"branch {push.branch!r} deploys to no environment")
    services = affected_services(push.changed_files, facts.services)
    if facts.services and push.changed_files and not services:
        return Ignored("the push changes no service's files")
    origin = _origin(push.repo, push.sha, delivery, push.changed_files, push.clone_url,
                     branch=push.branch, services=services, event="push", url=push.url)
    return Intent(kind=IntentKind.DEPLOY, env=facts.env, ref=push.sha, user=f"github:{push.pusher}",
                  service=services[0] if len(services) == 1 else None, source="github",
                  text=f"push to {push.branch}", origin=origin)


def pull_intent(pr: PullRequest, facts: Facts, *, delivery: str) -> Intent:
    """The pre-merge validation run of a pull request's head commit."""
    services = affected_services(facts.changed_files, facts.services)
    origin = _origin(pr.repo, pr.sha, delivery, facts.changed_files, pr.clone_url, pr=pr.number,
                     services=services, event="pull_request", url=pr.url, pr_author=pr.author,
                     **_fork(pr.repo, pr.head_repo))
    return Intent(kind=IntentKind.VALIDATE, ref=pr.sha, user=f"github:{pr.author}", source="github",
                  service=services[0] if len(services) == 1 else None,
                  text=f"pull request #{pr.number} {pr.action}", origin=origin)


def command_intent(comment: Comment, sha: str, facts: Facts, *, delivery: str,
                   author: str | None = None, head_repo: str | None = None) -> Intent:
    """The run a permitted `/orchestra deploy|validate` comment asks for, at the PR's head commit.

    ``author`` (the pull request's) is recorded so that they cannot approve its deploy either;
    ``head_repo`` marks a fork's run, which runs no code until a collaborator allows it."""
    services = affected_services(facts.changed_files, facts.services)
    origin = _origin(comment.repo, sha, delivery, facts.changed_files, comment.clone_url,
                     pr=comment.number, services=services, comment_id=comment.comment_id,
                     event="issue_comment", url=comment.url, **({"pr_author": author} if author else {}),
                     **(_fork(comment.repo, head_repo) if head_repo is not None else {}))
    return Intent(kind=comment.command.kind, env=comment.command.env, ref=sha, source="github",
                  service=services[0] if len(services) == 1 else None,
                  user=f"github:{comment.user}", text=f"/orchestra {comment.command.kind.value}",
                  origin=origin)


def resolve_repo(repos: Sequence[str], full_name: str) -> str | None:
    """The served repository (path or URL) for ``owner/name``, matched exactly on both parts.

    A URL (``https://github.com/owner/name.git``, ``git@github.com:owner/name.git``) or a folder
    (``/srv/owner/name``) names its owner and repository in its last two parts; case does not
    matter, as on GitHub. Nothing else matches: a fork or a namesake under another owner is not served.
    """
    wanted = full_name.lower()
    for repo in repos:
        parts = repo.rstrip("/").removesuffix(".git").replace(":", "/").lower().split("/")
        if len(parts) >= 2 and "/".join(parts[-2:]) == wanted:
            return repo
    return None


def _fork(repo: str, head_repo: str | None) -> dict[str, str]:
    """``{"fork": head repository}`` when the head is not in ``repo`` (a deleted fork has none)."""
    return {} if head_repo == repo else {"fork": head_repo or "(a deleted fork)"}


def _origin(repo: str, sha: str, delivery: str, files: Sequence[str], clone_url: str | None,
            **extra: Any) -> dict[str, Any]:
    return {"repo": repo, "sha": sha, "delivery": delivery, "changed_files": list(files),
            "clone_url": clone_url, **extra}


def _need(d: dict[str, Any], key: str, kind: type) -> Any:
    value = d.get(key)
    if not isinstance(value, kind):
        raise Malformed(f"`{key}` is missing or not a {kind.__name__}")
    return value


def _repo_name(p: dict[str, Any]) -> str:
    name = _need(_need(p, "repository", dict), "full_name", str)
    if not _REPO.match(name):
        raise Malformed(f"repository.full_name {name[:100]!r} is not owner/name")
    return name


def _clone_url(p: dict[str, Any]) -> str | None:
    return _text_or_none((p.get("repository") or {}).get("clone_url"))


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith("https://") else None


def _sha(value: Any) -> str:
    if not isinstance(value, str) or not _SHA.match(value):
        raise Malformed("the commit sha is missing or not 40 hex digits")
    return value


def _number(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Malformed("an issue, pull request or comment number is missing")
    return value


def _login(user: Any, where: str) -> str:
    login = user.get("login") if isinstance(user, dict) else None
    if not isinstance(login, str) or not login:
        raise Malformed(f"`{where}.login` is missing")
    return login
