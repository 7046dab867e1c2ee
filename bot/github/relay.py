"""The GitHub relay: runs that came from GitHub, shown on their pull request and commit.

A member of the consumer group ``github-relay`` on the event stream. For a run whose
source is github it keeps one PR comment per run, updated in place (found again by
a hidden marker, so a restart or a redelivered event never duplicates it), and the
commit status (pending / success / failure). The comment is rendered from the run's
whole event history, so handling an event twice or out of order gives the same text.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from bot.github.client import GitHubClient
from orchestra import redisconn
from orchestra.errors import NotFound
from orchestra.events import Consumer, Delivery, Event, EventBus, EventType
from orchestra.logs import run_context
from orchestra.loops import keep_going_async
from orchestra.redaction import hold_settings, redact
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore

logger = logging.getLogger(__name__)

GROUP = "github-relay"
MARKER = "<!-- orchestra:run:{run_id} -->"
STATE_KEY = "orchestra:github:relay:{run_id}"  # hash: comment_id, body_sha, status
STATE_TTL_S = 30 * 24 * 3600
MAX_LISTED = 20
SUCCESS_TEXT = {"validate": "Safe to merge and deploy", "deploy": "Deployed", "rollback": "Rolled back",
                "plan": "Planned", "drift": "No drift"}
STATUS_TEXT = {"pending": "running", "success": "passed", "failure": "failed", "error": "could not run"}
ICONS = {"pending": "⏳", "success": "✅", "failure": "❌", "error": "⚠️"}


@dataclass
class RunView:
    """What the PR comment and the commit status say about a run."""

    state: str  # pending | success | failure | error
    headline: str
    stages: list[tuple[str, str]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    failed_tests: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)  # the iac stage's plan by resource type, or why it failed


def view_of(run: Run, events: Sequence[Event]) -> RunView:
    """Summarize a run from its events (pure)."""
    view = RunView(state="pending", headline=f"{run.kind} {_target(run)}: queued")
    for event in events:
        _apply(view, run, event)
    if run.status.finished:
        view.state = _final_state(run.status)
        reason = run.reason or (view.notes[-1] if view.notes else "")
        if view.state == "success":
            view.headline = f"{SUCCESS_TEXT.get(run.kind, 'Succeeded')} ({_target(run)})"
        elif run.kind == "validate":
            view.headline = f"Not safe to merge ({_target(run)})" + (f": {reason}" if reason else "")
        else:
            view.headline = f"{run.kind} {_target(run)} {run.status.value}" + (f": {reason}" if reason else "")
    return view


def _apply(view: RunView, run: Run, event: Event) -> None:
    data, kind = event.data, event.type
    if kind == EventType.STAGE_STARTED:
        view.stages.append((str(data.get("stage")), "running"))
        view.headline = f"{run.kind} {_target(run)}: {data.get('stage')} running"
    elif "passed" in data and "stage" in data:
        _set_stage(view, str(data["stage"]), "passed" if data["passed"] else f"failed: {data.get('summary', '')}")
    elif kind == EventType.STAGE_FAILED:
        _set_stage(view, str(data.get("stage")), f"failed: {data.get('reason', '')}")
    elif kind in (EventType.APPROVAL_REQUESTED, EventType.LOCK_WAITING, EventType.POLICY_DENIED,
                  EventType.DEPLOYMENT_FAILED, EventType.ROLLBACK_EVENT, EventType.DEPLOYMENT_SUCCEEDED):
        view.notes.append(f"{kind.value.replace('_', ' ')}: " + str(data.get("reason") or data.get("message")
                                                                   or data.get("summary") or ""))
    if kind == EventType.CODE_ANALYSIS_RESULT:
        view.findings = [_finding(f) for f in data.get("findings") or [] if isinstance(f, dict)
                         and f.get("severity", "error") == "error"]
    if kind == EventType.TEST_RESULTS:
        view.failed_tests = _failed_tests(data)
    if kind == EventType.IAC_READY and data.get("stage") == "iac":
        view.plan = _plan_lines(data)


def _set_stage(view: RunView, stage: str, status: str) -> None:
    for i, (name, _) in enumerate(view.stages):
        if name == stage:
            view.stages[i] = (name, status)
            return
    view.stages.append((stage, status))


def _finding(f: dict[str, Any]) -> str:
    where = f"{f.get('file')}:{f.get('line')}" if f.get("line") else str(f.get("file") or "(repository)")
    return f"`{where}` {f.get('rule', '')}: {_one_line(f.get('message'))}"


def _failed_tests(data: dict[str, Any]) -> list[str]:
    out = []
    for service in (data.get("services") or {}).values():
        for failure in (service or {}).get("failures") or []:
            where = f" (`{failure.get('file')}:{failure.get('line')}`)" if failure.get("file") else ""
            out.append(f"`{failure.get('test')}`{where}: {_one_line(failure.get('message'))}")
        if service and not service.get("ok", True) and not service.get("failures"):
            out.append(f"{service.get('service')}: {_one_line(service.get('note'))}")
    return out


MAX_PLAN_CHARS = 1500  # a failed plan's error: Terraform's own words with file and line
PLAN_ACTIONS = ("add", "change", "replace", "destroy")
_INDEX = re.compile(r'\[(?:"(?:[^"\\]|\\.)*"|\d+)\]')  # a resource's count or for_each key in its address
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _plan_lines(data: dict[str, Any]) -> list[str]:
    """The plan's counts, then one row per action and resource type (capped); a failed plan's error.

    Only addresses are read (the stage puts no values in its event), and of them only the resource type:
    a for_each key is the repository's text and stays out of the comment."""
    plan = data.get("plan")
    if not data.get("passed"):
        return [f"Terraform did not plan: {_flat(data.get('summary'), MAX_PLAN_CHARS)}"] if data.get("summary") \
            else []
    if not isinstance(plan, dict):  # Cloud Run or Container Apps Terraform: checked, never planned here
        return [f"Terraform not planned: {_flat(data.get('summary'), MAX_PLAN_CHARS)}"] \
            if data.get("not_applied_here") else []
    version = f"{data.get('terraform', 'terraform')} {data.get('terraform_version', '')}".strip()
    lines = [f"`{version}`: **{_flat(plan.get('summary'), 100)}**; nothing was applied"]
    rows = [(action, kind, count) for action in PLAN_ACTIONS
            for kind, count in sorted(_by_type(plan.get(action)).items())]
    lines += [f"| {action} | `{kind}` | {count} |" for action, kind, count in rows[:MAX_LISTED]]
    if len(rows) > MAX_LISTED:
        lines.append(f"| … | {len(rows) - MAX_LISTED} more resource types | |")
    return lines


def _by_type(addresses: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for address in addresses if isinstance(addresses, list) else []:
        parts = _INDEX.sub("", str(address)).split(".")
        kind = parts[-2] if len(parts) >= 2 and _TYPE.match(parts[-2]) else "(unnamed type)"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _flat(text: Any, limit: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render_comment(run: Run, view: RunView) -> str:
    """The PR comment's markdown; starts with the run's hidden marker."""
    sha = (run.commit or run.origin.get("sha") or "")[:7]
    lines = [MARKER.format(run_id=run.id), f"### {ICONS[view.state]} DevOps Orchestra: {view.headline}", "",
             f"Run `{run.id}` · {run.kind} · commit `{sha}` · requested by {run.requested_by}"]
    if view.stages:
        lines += ["", "| stage | result |", "|---|---|"]
        lines += [f"| {name} | {_one_line(status)} |" for name, status in view.stages]
    if view.plan:
        table = [line for line in view.plan if line.startswith("|")]
        lines += ["", "**Terraform plan**: " + view.plan[0]]
        lines += ["", "| action | resource type | count |", "|---|---|---|", *table] if table else []
    for title, items in (("Code analysis errors", view.findings), ("Failed tests", view.failed_tests),
                         ("Notes", view.notes)):
        if items:
            lines += ["", f"**{title}** ({len(items)}):"] + [f"- {i}" for i in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                lines.append(f"- … and {len(items) - MAX_LISTED} more")
    return redact("\n".join(lines))


def status_context(run: Run) -> str:
    return "orchestra/validate" if run.kind == "validate" else f"orchestra/{run.kind}-{run.env}"


def _target(run: Run) -> str:
    if run.kind in ("plan", "drift"):
        return f"for {run.env}"
    return f"#{run.origin.get('pr')}" if run.kind == "validate" and run.origin.get("pr") else f"to {run.env}"


def _final_state(status: RunStatus) -> str:
    return {RunStatus.SUCCEEDED: "success", RunStatus.FAILED: "failure"}.get(status, "error")


def _one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text or "").split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class GitHubRelay:
    """Keeps PR comments and commit statuses of GitHub runs current."""

    def __init__(self, settings: Settings, *, redis: Redis, client: GitHubClient,
                 name: str | None = None) -> None:
        self.settings = settings
        hold_settings(settings)  # its token and webhook secret never reach a comment, whatever their shape
        self.redis = redis
        self.client = client
        self.bus = EventBus(redis)
        # one name per process: several relays share the group, stale entries move by XAUTOCLAIM
        self.consumer = Consumer(self.bus, GROUP, name or f"{socket.gethostname()}-{os.getpid()}")

    async def run(self, stop: threading.Event, *, block_ms: int = 500) -> None:
        """Handle deliveries until ``stop`` is set; one refresh per run per batch."""
        async def step() -> None:
            batch = await asyncio.to_thread(self.consumer.read, block_ms=block_ms)
            for run_id, deliveries in _by_run(batch).items():
                try:
                    with run_context(run_id):
                        await self.refresh(run_id)
                except Exception:  # left pending: re-claimed later, dead-lettered if it keeps failing
                    logger.exception("run %s: GitHub relay failed", run_id)
                    continue
                for delivery in deliveries:
                    await asyncio.to_thread(self.consumer.ack, delivery)
        await keep_going_async("github-relay", step, stop)

    async def refresh(self, run_id: str) -> None:
        """Bring the run's PR comment and commit status up to date."""
        try:
            run = await asyncio.to_thread(RunStore(self.redis).get, run_id)
        except NotFound:
            return
        if run.source != "github" or not run.origin.get("repo"):
            return
        events = await asyncio.to_thread(self.bus.replay, run_id)
        view = view_of(run, events)
        if run.origin.get("pr"):
            await self._upsert_comment(run, render_comment(run, view))
        await self._set_status(run, view)

    async def _upsert_comment(self, run: Run, body: str) -> None:
        key = STATE_KEY.format(run_id=run.id)
        state = await asyncio.to_thread(self.redis.hgetall, key)
        digest = hashlib.sha256(body.encode()).hexdigest()
        if _text(state.get(b"body_sha")) == digest:
            return
        repo, number = str(run.origin["repo"]), int(run.origin["pr"])
        comment_id = _text(state.get(b"comment_id")) or await self._find_comment(run, repo, number)
        if comment_id:
            await self.client.update_comment(repo, int(comment_id), body)
        else:
            comment_id = str((await self.client.create_comment(repo, number, body))["id"])
        await asyncio.to_thread(self._remember, key, comment_id=comment_id, body_sha=digest)

    async def _find_comment(self, run: Run, repo: str, number: int) -> str:
        marker = MARKER.format(run_id=run.id)
        for comment in await self.client.issue_comments(repo, number):
            if str(comment.get("body", "")).startswith(marker):
                return str(comment["id"])
        return ""

    async def _set_status(self, run: Run, view: RunView) -> None:
        sha = run.commit or run.origin.get("sha")
        key = STATE_KEY.format(run_id=run.id)
        if not sha or _text(await asyncio.to_thread(self.redis.hget, key, "status")) == view.state:
            return
        description = redact(f"{STATUS_TEXT[view.state]}: {view.headline}")
        await self.client.set_status(str(run.origin["repo"]), sha, view.state, context=status_context(run),
                                     description=description)
        await asyncio.to_thread(self._remember, key, status=view.state)

    def _remember(self, key: str, **fields: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=cast(Any, fields))
        pipe.expire(key, STATE_TTL_S)
        pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _by_run(batch: list[Delivery]) -> dict[str, list[Delivery]]:
    grouped: dict[str, list[Delivery]] = {}
    for delivery in batch:
        grouped.setdefault(delivery.event.run_id, []).append(delivery)
    return grouped


async def run_relay(settings: Settings, *, stop: threading.Event, redis: Redis | None = None) -> None:
    """The relay as a task: its own Redis connection and GitHub client (used by `orchestra webhooks`)."""
    conn = redis or redisconn.client_for(settings)
    async with GitHubClient(settings.github_token, base_url=settings.github_api_url) as client:
        await GitHubRelay(settings, redis=conn, client=client).run(stop)
