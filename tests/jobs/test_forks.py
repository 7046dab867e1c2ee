"""A fork's pull request runs static analysis only; its code runs once a collaborator with write permission
comments `/orchestra validate` on that head commit, and a new push needs a new one. Real Redis, a real worker
and router, the real webhook receiver and the local GitHub API server; git repositories made here."""
from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import StageResult
from bot.github.handoff import DeliveryOutcome, outcome
from bot.github.receiver import build_webhook_app
from bot.github.relay import render_comment, view_of
from jobs import approvals, forks
from jobs.graph import ANALYZE, TEST, Graph
from jobs.router import Router
from jobs.runner import execute_stage
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Audit, RunStatus, RunStore
from tests.jobs.test_trusted_policy import TRUSTED, git
from tests.support.fake_github import FakeGitHub, fake_github, serve_in_thread
from tests.support.github_payloads import REPO, SECRET, body_of, headers, load, pr_comment
from tests.support.services import wait_for

FORK = "mallory/Hello-World"


def run_code(run_id: str) -> dict[str, Any]:
    """The stage that runs the repository's code (the tests), reduced to saying that it ran."""
    return execute_stage(run_id, CODE, lambda ctx: StageResult(True, "the pull request's code ran"))


CODE = replace(TEST, func="tests.jobs.test_forks.run_code", retries=0)
GRAPH = Graph((ANALYZE, CODE))


@dataclass
class World:
    redis: Redis
    gh: FakeGitHub
    url: str
    repo: Path

    def deliver(self, event: str, payload: dict[str, Any]) -> DeliveryOutcome:
        body, delivery = body_of(payload), str(uuid.uuid4())
        request = urllib.request.Request(f"{self.url}/github/webhook", data=body, method="POST",
                                         headers=headers(event, body, delivery=delivery))
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202
        found = wait_for(lambda: outcome(self.redis, delivery), what=f"outcome of {delivery}")
        assert isinstance(found, DeliveryOutcome)
        return found

    def push_to_fork(self, text: str) -> str:
        """A new commit on the fork's branch (the served clone has it, as GitHub has refs/pull/N/head)."""
        git(self.repo, "checkout", "-q", "fork-work")
        (self.repo / "backend" / "fork_change.py").write_text(text)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "a change from the fork")
        sha = git(self.repo, "rev-parse", "HEAD")
        git(self.repo, "checkout", "-q", "main")
        self.gh.add_pull(REPO, 2, sha=sha, head_repo=FORK, files=["backend/fork_change.py"])
        return sha

    def opened(self, sha: str, action: str = "opened") -> str:
        payload = load("pull_request.opened.payload.json")
        payload["action"] = action
        payload["pull_request"]["head"]["sha"] = sha
        payload["pull_request"]["head"]["repo"]["full_name"] = FORK
        result = self.deliver("pull_request", payload)
        assert result.status == "started", result
        return str(result.run_id)


@pytest.fixture
def world(redis: Redis, settings: Settings, tmp_path: Path,
          start_worker: Callable[..., object]) -> Iterator[World]:
    repo = tmp_path / "Codertocat" / "Hello-World"
    (repo / "backend").mkdir(parents=True)
    (repo / "backend" / "app.py").write_text("def hello() -> str:\n    return 'hello'\n")
    (repo / "devops_orchestra.yaml").write_text(TRUSTED)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hello")
    git(repo, "branch", "fork-work")
    start_worker("--no-router")
    stop = threading.Event()
    router = threading.Thread(target=Router(redis, settings, graph=GRAPH, name="test-router").run, args=(stop,),
                              daemon=True)
    router.start()
    with fake_github() as gh:
        served = settings.with_(github_webhook_secret=SECRET, github_token=gh.token, github_api_url=gh.url,
                                repos=(str(repo),))
        with serve_in_thread(build_webhook_app(served, redis=redis), name="webhooks") as url:
            yield World(redis, gh, url, repo)
    stop.set()
    router.join(timeout=10)


def status_of(redis: Redis, run_id: str, *wanted: RunStatus) -> RunStatus:
    wait_for(lambda: RunStore(redis).get(run_id).status in wanted, timeout=120, interval=0.2,
             what=f"run {run_id} to be {', '.join(wanted)}")
    return RunStore(redis).get(run_id).status


def code_ran(redis: Redis, run_id: str) -> bool:
    return any(e.type == EventType.TEST_RESULTS for e in EventBus(redis).replay(run_id))


def comment(world: World, user: str, body: str = "/orchestra validate") -> tuple[DeliveryOutcome, str]:
    before = len(world.gh.comment_bodies(REPO, 2))
    result = world.deliver("issue_comment", pr_comment(body, user=user))
    replies = world.gh.comment_bodies(REPO, 2)[before:]
    return result, replies[-1] if replies else ""


def test_a_forks_code_runs_only_after_a_writer_allows_that_commit(world: World, settings: Settings) -> None:
    redis = world.redis
    first = world.push_to_fork("X = 1\n")
    run_id = world.opened(first)
    assert status_of(redis, run_id, RunStatus.AWAITING_APPROVAL, RunStatus.SUCCEEDED) == RunStatus.AWAITING_APPROVAL
    run = RunStore(redis).get(run_id)
    assert (run.kind, run.stage, run.origin["fork"]) == ("validate", "test", FORK) and not code_ran(redis, run_id)
    asked = next(e for e in EventBus(redis).replay(run_id) if e.type == EventType.APPROVAL_REQUESTED)
    assert asked.data["gate"] == "fork" and "only static analysis ran" in asked.data["message"]
    shown = render_comment(run, view_of(run, EventBus(redis).replay(run_id)))  # the pull request's comment
    assert f"comments `/orchestra validate` on commit {first[:7]}" in shown

    # not from Slack, not from a reader, not from a stranger, and not by pushing a fork's own deploy
    click = approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings)
    assert not click.accepted and "comment `/orchestra validate` on the pull request" in click.message
    world.gh.permissions[(REPO, "reader")] = "read"
    assert comment(world, "reader")[1].startswith("`/orchestra validate` needs write permission")
    assert comment(world, "mallory")[1].startswith("DevOps Orchestra only takes commands from collaborators")
    world.gh.permissions[(REPO, "mallory")] = "write"  # even a writer cannot deploy a fork's code
    assert "comes from a fork" in comment(world, "mallory", "/orchestra deploy staging")[1]
    assert RunStore(redis).get(run_id).status == RunStatus.AWAITING_APPROVAL and not code_ran(redis, run_id)

    world.gh.permissions[(REPO, "alice")] = "write"
    result, reply = comment(world, "alice")
    assert result == DeliveryOutcome("answered", f"fork code allowed at {first[:7]}", run_id)
    assert reply.startswith(f"Allowed by @alice: the tests of `{first[:7]}` run now (run `{run_id}`)")
    assert status_of(redis, run_id, RunStatus.SUCCEEDED, RunStatus.FAILED) == RunStatus.SUCCEEDED
    assert code_ran(redis, run_id)
    assert ("fork_code_allowed", "github:alice") in [(a["action"], a["actor"]) for a in Audit(redis).entries()]

    # a new push parks again: the allowance named the old commit
    second = world.push_to_fork("X = 2\n")
    again = world.opened(second, action="synchronize")
    assert status_of(redis, again, RunStatus.AWAITING_APPROVAL, RunStatus.SUCCEEDED) == RunStatus.AWAITING_APPROVAL
    assert not code_ran(redis, again)
    result, reply = comment(world, "alice")
    assert result.run_id == again and f"`{second[:7]}` run now" in reply
    assert status_of(redis, again, RunStatus.SUCCEEDED, RunStatus.FAILED) == RunStatus.SUCCEEDED


def test_an_allowance_given_before_the_run_parks_opens_it_when_it_does(world: World) -> None:
    sha = world.push_to_fork("Y = 1\n")
    world.gh.permissions[(REPO, "alice")] = "write"
    result, reply = comment(world, "alice")  # no run yet: the comment starts one, allowed from the start
    assert result.status == "started" and "run once its static analysis passes" in reply
    run_id = str(result.run_id)
    assert RunStore(world.redis).get(run_id).origin["fork"] == FORK
    assert status_of(world.redis, run_id, RunStatus.SUCCEEDED, RunStatus.FAILED) == RunStatus.SUCCEEDED
    assert approvals.get(world.redis, run_id).decided_by == "github:alice" and code_ran(world.redis, run_id)
    assert forks.allowed(world.redis, RunStore(world.redis).get(run_id), "test")
    assert sha == RunStore(world.redis).get(run_id).commit


def test_a_stray_job_for_a_parked_forks_code_stage_runs_nothing(world: World, settings: Settings) -> None:
    run_id = world.opened(world.push_to_fork("Z = 1\n"))
    status_of(world.redis, run_id, RunStatus.AWAITING_APPROVAL)
    ran: list[str] = []
    answer = execute_stage(run_id, CODE, lambda ctx: ran.append("code") or StageResult(True, "ran"),
                           redis=world.redis, settings=settings)
    assert answer == {"skipped": True, "reason": "a fork's code runs after `/orchestra validate`"} and ran == []
    assert RunStore(world.redis).get(run_id).status == RunStatus.AWAITING_APPROVAL
