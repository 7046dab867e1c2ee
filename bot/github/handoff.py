"""After the webhook has answered: learn the slow facts, build the intent, dispatch, reply.

Runs as a background task of the webhook server. Blocking work (configuration,
dispatch, Redis) goes through ``asyncio.to_thread``; GitHub calls use the async
client. The outcome of every delivery is kept in Redis for a few days
(``orchestra webhooks`` users and tests read it with :func:`outcome`).
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import Redis

from bot.github import texts
from bot.github.client import GitHubClient, GitHubError, can_write
from bot.github.deliveries import (
    Comment,
    Facts,
    Ignored,
    PullRequest,
    Push,
    command_intent,
    pull_intent,
    push_intent,
)
from handlers import deploy, help, plan, status
from handlers.reply import Reply, Who
from jobs import forks
from jobs.dispatch import DEFAULT_ENV
from orchestra import policy
from orchestra.errors import OrchestraError
from orchestra.intents import ENVIRONMENTS, Intent, IntentKind
from orchestra.redaction import redact
from orchestra.settings import Settings
from orchestra.store import Audit, Run, finish_once

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

logger = logging.getLogger(__name__)

OUTCOME_KEY = "orchestra:github:delivery:{delivery}"
DELIVERY_ONCE = "github-delivery:{delivery}"
OUTCOME_TTL_S = 3 * 24 * 3600
CONFIG_FILE = "devops_orchestra.yaml"
KNOWN_PERMISSIONS = frozenset({"admin", "maintain", "write", "triage", "read"})


@dataclass(frozen=True)
class DeliveryOutcome:
    """What became of a delivery: started | ignored | answered | refused | failed."""

    status: str
    reason: str = ""
    run_id: str | None = None


def outcome(redis: Redis, delivery: str) -> DeliveryOutcome | None:
    """The recorded outcome of a delivery, or None while it is still being handled."""
    raw = redis.get(OUTCOME_KEY.format(delivery=delivery))
    return DeliveryOutcome(**json.loads(raw)) if raw else None


def _record(redis: Redis, delivery: str, result: DeliveryOutcome) -> None:
    """The outcome, and the delivery marked handled, in one transaction: until then a redelivery after
    the receiver's lease is served again (``begin_once``)."""
    pipe = redis.pipeline(transaction=True)
    pipe.set(OUTCOME_KEY.format(delivery=delivery), json.dumps(asdict(result)), ex=OUTCOME_TTL_S)
    finish_once(pipe, DELIVERY_ONCE.format(delivery=delivery))
    pipe.execute()


def default_config(repo: str, settings: Settings) -> ProjectConfig:
    """The project's configuration from its local copy (a clone for URL repositories)."""
    from orchestra.config import load_config
    from orchestra.repos import local_copy

    return load_config(local_copy(repo, settings))


def parse_at_commit(text: str, filename: str, repo: str) -> ProjectConfig:
    """A configuration file's text from GitHub; sections it leaves out are inferred from the served copy."""
    from orchestra.config import parse_config

    return parse_config(text, filename=filename, repo_dir=Path(repo) if Path(repo).is_dir() else None)


class Handoff:
    """Turns a parsed delivery into a run (or a reply) and records what happened."""

    def __init__(self, settings: Settings, *, redis: Redis, client: GitHubClient) -> None:
        self.settings = settings
        self.redis = redis
        self.client = client

    async def __call__(self, parsed: Push | PullRequest | Comment, *, delivery: str, repo: str) -> DeliveryOutcome:
        try:
            if isinstance(parsed, Push):
                result = await self._push(parsed, delivery, repo)
            elif isinstance(parsed, PullRequest):
                result = await self._pull_request(parsed, delivery, repo)
            else:
                result = await self._comment(parsed, delivery, repo)
        except OrchestraError as exc:  # config problems, policy, locks: told where the request came from
            result = DeliveryOutcome("refused", str(exc))
            await self._tell(parsed, exc)
        except Exception:
            logger.exception("GitHub delivery %s failed", delivery)
            result = DeliveryOutcome("failed", "internal error (logged)")
            if isinstance(parsed, Comment):
                await self._reply(parsed.repo, parsed.number, texts.FAILED)
        await asyncio.to_thread(_record, self.redis, delivery, result)
        if result.status == "refused":  # in the audit trail with the Slack refusals, not only in the PR
            await asyncio.to_thread(Audit(self.redis).record, "request_refused", actor=f"github:{_actor(parsed)}",
                                    reason=result.reason, source="github", delivery=delivery, repo=parsed.repo)
        logger.info("GitHub delivery %s: %s %s %s", delivery, result.status, result.run_id or "", result.reason)
        return result

    async def _tell(self, parsed: Push | PullRequest | Comment, exc: OrchestraError) -> None:
        if isinstance(parsed, Push):
            await self._status(parsed.repo, parsed.sha, "error", "orchestra/push", exc.message)
        else:
            await self._reply(parsed.repo, parsed.number, texts.refused(exc.message, exc.hint))

    async def _config(self, repo: str, gh_repo: str, sha: str) -> ProjectConfig:
        """The configuration at the commit when GitHub has the file there, else the served copy's."""
        try:
            text = await self.client.file_text(gh_repo, CONFIG_FILE, sha)
        except GitHubError as exc:
            logger.warning("%s at %s@%s unavailable, using the served copy: %s", CONFIG_FILE, gh_repo, sha, exc)
            text = None
        if text is None:
            return await asyncio.to_thread(default_config, repo, self.settings)
        return await asyncio.to_thread(parse_at_commit, text, f"{gh_repo}@{sha[:7]}/{CONFIG_FILE}", repo)

    async def _push(self, push: Push, delivery: str, repo: str) -> DeliveryOutcome:
        config = await self._config(repo, push.repo, push.sha)
        trusted = await asyncio.to_thread(policy.trusted_policy, repo, self.settings)
        # where a branch deploys is policy: the pushed commit's own file does not choose it
        facts = Facts(services=config.service_paths(), env=_push_env(trusted.govern(config), push.branch))
        intent = push_intent(push, facts, delivery=delivery)
        if isinstance(intent, Ignored):
            return DeliveryOutcome("ignored", intent.reason)
        run = await self._dispatch(intent, repo)
        return DeliveryOutcome("started", intent.text, run.id)

    async def _pull_request(self, pr: PullRequest, delivery: str, repo: str) -> DeliveryOutcome:
        files = await self._changed_files(pr.repo, pr.number)
        config = await self._config(repo, pr.repo, pr.sha)
        intent = pull_intent(pr, Facts(changed_files=files, services=config.service_paths()),
                             delivery=delivery)
        run = await self._dispatch(intent, repo)
        return DeliveryOutcome("started", intent.text, run.id)

    async def _comment(self, comment: Comment, delivery: str, repo: str) -> DeliveryOutcome:
        command = comment.command
        if command.error:
            return await self._answer(comment, texts.not_understood(command.error), "ignored", command.error)
        who = Who(comment.user, source="github", place=f"{comment.repo}#{comment.number}", via="comment")
        if command.kind is IntentKind.HELP:
            return await self._answer(comment, help.handle(Intent(kind=IntentKind.HELP), who, redis=self.redis,
                                                           settings=self.settings), "answered", "help")
        permission = await self.client.permission(comment.repo, comment.user)
        if permission not in KNOWN_PERMISSIONS:
            return await self._answer(comment, texts.NOT_ALLOWED, "refused", f"{comment.user} is no collaborator")
        if command.kind is IntentKind.STATUS:
            question = Intent(kind=IntentKind.STATUS, origin={"repo": comment.repo, "pr": comment.number})
            reply = await asyncio.to_thread(status.handle, question, who, redis=self.redis, settings=self.settings)
            return await self._answer(comment, reply, "answered", "status")
        pull = await self.client.pull(comment.repo, comment.number)
        head_repo = ((pull.get("head") or {}).get("repo") or {}).get("full_name")
        if command.kind is IntentKind.PLAN:
            return await self._plan(comment, who, pull, repo, delivery, infra=texts.PLAN_FROM_FORK
                                    if head_repo != comment.repo else None if can_write(permission)
                                    else texts.PLAN_NEEDS_WRITE)
        if command.kind is IntentKind.VALIDATE:
            if not can_write(permission):
                return await self._answer(comment, texts.NEEDS_WRITE_VALIDATE, "refused",
                                          f"{comment.user} is {permission}")
            if head_repo != comment.repo:
                return await self._allow_fork(comment, pull, delivery, repo, head_repo)
            return await self._command_run(comment, pull, delivery, repo)
        if head_repo != comment.repo:
            return await self._answer(comment, texts.FROM_FORK, "refused", f"fork {head_repo}")
        if command.kind is IntentKind.DEPLOY and not can_write(permission):
            return await self._answer(comment, texts.NEEDS_WRITE, "refused", f"{comment.user} is {permission}")
        return await self._command_run(comment, pull, delivery, repo)

    async def _command_run(self, comment: Comment, pull: dict[str, Any], delivery: str, repo: str, *,
                           head_repo: str | None = None) -> DeliveryOutcome:
        files = await self._changed_files(comment.repo, comment.number)
        sha = str(pull["head"]["sha"])
        config = await self._config(repo, comment.repo, sha)
        intent = command_intent(comment, sha, Facts(changed_files=files, services=config.service_paths()),
                                delivery=delivery, author=_login(pull.get("user")), head_repo=head_repo)
        run = await self._dispatch(intent, repo)
        return DeliveryOutcome("started", intent.text, run.id)

    async def _allow_fork(self, comment: Comment, pull: dict[str, Any], delivery: str, repo: str,
                          head_repo: str | None) -> DeliveryOutcome:
        """A writer's `/orchestra validate` on a fork's pull request: that head commit's code may run."""
        sha, user = str(pull["head"]["sha"]), f"github:{comment.user}"
        opened = await asyncio.to_thread(forks.allow, self.redis, repo=comment.repo, pr=comment.number, sha=sha,
                                         user=user)
        await asyncio.to_thread(Audit(self.redis).record, "fork_code_allowed", actor=user, run_id=None,
                                repo=comment.repo, pr=comment.number, sha=sha, fork=head_repo, opened=opened)
        if opened:
            await self._reply(comment.repo, comment.number, texts.FORK_ALLOWED.format(
                user=comment.user, sha=sha[:7], runs=", ".join(f"`{r}`" for r in opened)))
            return DeliveryOutcome("answered", f"fork code allowed at {sha[:7]}", opened[0])
        pending = await asyncio.to_thread(forks.active_runs, self.redis, repo=comment.repo, pr=comment.number,
                                          sha=sha)
        result = DeliveryOutcome("answered", f"fork code allowed at {sha[:7]}", pending[0].id) if pending else \
            await self._command_run(comment, pull, delivery, repo, head_repo=head_repo)
        await self._reply(comment.repo, comment.number, texts.FORK_ALLOWED_LATER.format(
            user=comment.user, sha=sha[:7], runs=f"`{result.run_id}`"))
        return result

    async def _plan(self, comment: Comment, who: Who, pull: dict[str, Any], repo: str, delivery: str, *,
                    infra: str | None) -> DeliveryOutcome:
        """What a deploy of this pull request would do, from the configuration, and a plan run of its Terraform
        (``infra``: why the Terraform is not planned, for a fork or a commenter who may not write)."""
        files = await self._changed_files(comment.repo, comment.number)
        sha = str(pull["head"]["sha"])
        config = await self._config(repo, comment.repo, sha)
        trusted = await asyncio.to_thread(policy.trusted_policy, repo, self.settings)
        config = trusted.govern(config)  # the gates shown are the ones that apply, not the branch's
        reply = plan.handle(Intent(kind=IntentKind.PLAN, ref=sha), who, config=config, changed_files=files)
        if infra is not None:
            return await self._answer(comment, f"{texts.render(reply, number=comment.number)}\n\n{infra}",
                                      "answered", "plan")
        started = await self._command_run(comment, pull, delivery, repo)
        env = comment.command.env or DEFAULT_ENV
        await self._answer(comment, f"{texts.render(reply, number=comment.number)}\n\n" + texts.PLAN_STARTED.format(
            sha=sha[:7], env=env, run_id=started.run_id), "started", "plan")
        return started

    async def _dispatch(self, intent: Intent, repo: str) -> Run:
        who = Who(intent.user, source="github", via=str(intent.origin.get("event", "")))
        reply = await asyncio.to_thread(deploy.handle, intent, who, redis=self.redis, settings=self.settings,
                                        repo=repo)
        assert reply.run is not None  # deploy.handle raises instead of starting nothing
        return reply.run

    async def _changed_files(self, repo: str, number: int) -> tuple[str, ...]:
        try:
            return tuple(await self.client.pull_files(repo, number))
        except GitHubError as exc:  # validate everything rather than nothing
            logger.warning("changed files of %s#%s unavailable, taking all services: %s", repo, number, exc)
            return ()

    async def _answer(self, comment: Comment, body: str | Reply, status: str, reason: str) -> DeliveryOutcome:
        text = body if isinstance(body, str) else texts.render(body, number=comment.number)
        await self._reply(comment.repo, comment.number, text)
        return DeliveryOutcome(status, reason)

    async def _reply(self, repo: str, number: int, body: str) -> None:
        try:
            await self.client.create_comment(repo, number, redact(body))
        except GitHubError:
            logger.exception("could not reply on %s#%s", repo, number)

    async def _status(self, repo: str, sha: str, state: str, context: str, description: str) -> None:
        try:
            await self.client.set_status(repo, sha, state, context=context, description=redact(description))
        except GitHubError:
            logger.exception("could not set status %s on %s@%s", context, repo, sha)


def _actor(parsed: Push | PullRequest | Comment) -> str:
    return parsed.pusher if isinstance(parsed, Push) else parsed.author if isinstance(parsed, PullRequest) \
        else parsed.user


def _login(user: Any) -> str | None:
    login = user.get("login") if isinstance(user, dict) else None
    return login if isinstance(login, str) and login else None


def _push_env(config: ProjectConfig, branch: str) -> str | None:
    """The least critical environment whose branch patterns match (development, staging, production)."""
    for name in reversed(ENVIRONMENTS):
        if any(fnmatchcase(branch, pattern) for pattern in config.environment(name).branches):
            return name
    return None
