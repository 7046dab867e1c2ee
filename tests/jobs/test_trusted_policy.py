"""Attacks on the gate: a branch (or a pull request) that rewrites its own policy, and one person with two
accounts. Real Redis, real git repositories, a real worker and router; the PR-comment attack goes through the
real webhook receiver and the local GitHub API server."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from bot.github.handoff import outcome
from bot.github.receiver import build_webhook_app
from bot.localslack.client import WorkspaceClient
from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import ANALYZE, TEST, Graph
from jobs.router import Router
from orchestra import policy
from orchestra.errors import ConfigError, PolicyDenied
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, RunStatus, RunStore
from tests.support.fake_github import fake_github, serve_in_thread
from tests.support.github_payloads import REPO, SECRET, body_of, headers, pr_comment
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack

GATED = Graph((ANALYZE, replace(TEST, approval=True)))  # the test stage stands in for deploy

TRUSTED = """\
project: {name: shop, language: python, framework: flask}
deployment:
  services:
    - {name: backend, path: backend, port: 5001}
    - {name: frontend, path: frontend, port: 5000, depends_on: [backend]}
environments:
  production:
    approval_required: true
    approvers: [U0BOB, U0ALICE]
    deployers: [U0ALICE, U0BOB, U0CAROL]
identities:
  alice: {slack: U0ALICE, github: alice}
  bob: {slack: U0BOB, github: bob-gh}
"""
NO_GATE = TRUSTED.replace("approval_required: true", "approval_required: false")
SELF_APPROVE = TRUSTED.replace("approvers: [U0BOB, U0ALICE]", "approvers: [U0BOB, U0ALICE, U0CAROL]\n"
                               "    allow_self_approval: true")


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": os.environ["PATH"], "HOME": str(repo)}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The shop as a git repository: the trusted policy on main, and branches that rewrite it."""
    dest = tmp_path / "Codertocat" / "Hello-World"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", dest,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (dest / "devops_orchestra.yaml").write_text(TRUSTED)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "shop")
    for branch, text in (("no-gate", NO_GATE), ("self-approve", SELF_APPROVE)):
        git(dest, "checkout", "-q", "-b", branch, "main")
        (dest / "devops_orchestra.yaml").write_text(text)
        git(dest, "commit", "-q", "-am", f"{branch}: my own rules")
    git(dest, "checkout", "-q", "main")
    return dest


@pytest.fixture
def start_router(redis: Redis, start_worker: Callable[..., object]) -> Iterator[Callable[[Settings], Router]]:
    """A worker and a router with these settings (both are stopped after the test)."""
    stop = threading.Event()
    threads = []

    def start(settings: Settings) -> Router:
        start_worker("--no-router", settings=settings)
        router = Router(redis, settings, graph=GATED, name="test-router")
        threads.append(threading.Thread(target=router.run, args=(stop,), daemon=True))
        threads[-1].start()
        return router

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


@pytest.fixture
def router(settings: Settings, start_router: Callable[[Settings], Router]) -> Router:
    return start_router(settings)


def deploy(redis: Redis, settings: Settings, repo: Path, ref: str, *, user: str = "U0CAROL") -> str:
    intent = Intent(kind=IntentKind.DEPLOY, service="backend", env="production", ref=ref, user=user,
                    source="slack")
    return dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED).id


def parked(redis: Redis, run_id: str) -> None:
    wait_for(lambda: RunStore(redis).get(run_id).status in (RunStatus.AWAITING_APPROVAL, RunStatus.SUCCEEDED,
                                                            RunStatus.FAILED),
             timeout=180, interval=0.2, what=f"run {run_id} to park or end")
    run = RunStore(redis).get(run_id)
    assert run.status == RunStatus.AWAITING_APPROVAL, (run.status, run.reason)


def notices(redis: Redis, run_id: str) -> list[str]:
    return [e.data["summary"] for e in EventBus(redis).replay(run_id) if e.type == EventType.POLICY_DENIED]


def test_the_policy_is_read_from_the_default_branch_not_the_working_tree_or_a_branch(
        repo: Path, settings: Settings) -> None:
    (repo / "devops_orchestra.yaml").write_text(NO_GATE)  # uncommitted: not the default branch
    trusted = policy.trusted_policy(str(repo), settings)
    assert trusted.source == "the main branch of Hello-World"
    assert trusted.environment("production").approval_required
    assert trusted.identities.same_person("U0ALICE", "github:alice")
    assert not trusted.identities.same_person("U0ALICE", "github:bob-gh")


def test_a_branch_that_switches_approval_off_still_waits_for_an_approver(
        redis: Redis, settings: Settings, repo: Path, router: Router) -> None:
    run_id = deploy(redis, settings, repo, "no-gate")
    parked(redis, run_id)
    [notice] = notices(redis, run_id)
    assert "`production.approval_required` is false here, true in the trusted policy" in notice
    assert "the trusted policy from the main branch of Hello-World does" in notice
    assert ("branch_policy_ignored", "U0CAROL") in [(a["action"], a["actor"]) for a in Audit(redis).entries()]
    assert EventType.TEST_RESULTS not in [e.type for e in EventBus(redis).replay(run_id)]
    assert approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings).accepted
    wait_for(lambda: RunStore(redis).get(run_id).status == RunStatus.SUCCEEDED, timeout=120, interval=0.2)


def test_a_branch_that_makes_its_author_an_approver_cannot_approve_itself(
        redis: Redis, settings: Settings, repo: Path, router: Router) -> None:
    run_id = deploy(redis, settings, repo, "self-approve")
    parked(redis, run_id)
    own = approvals.decide(run_id, user="U0CAROL", approve=True, redis=redis, settings=settings)
    assert not own.accepted and own.message.startswith("<@U0CAROL> may not approve deploys to production")
    assert "`production.allow_self_approval` is true here, false in the trusted policy" in notices(redis, run_id)[0]
    assert RunStore(redis).get(run_id).status == RunStatus.AWAITING_APPROVAL
    assert ("approval_refused", "U0CAROL") in [(a["action"], a["actor"]) for a in Audit(redis).entries()]


def test_whoever_pushed_cannot_approve_the_deploy_from_slack(redis: Redis, settings: Settings, repo: Path,
                                                           router: Router) -> None:
    intent = Intent(kind=IntentKind.DEPLOY, service="backend", env="production", ref="main", user="github:alice",
                    source="github", origin={"event": "push"})
    run_id = dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED).id
    parked(redis, run_id)
    own = approvals.decide(run_id, user="U0ALICE", approve=True, redis=redis, settings=settings)
    assert not own.accepted
    assert own.message == ("you cannot approve your own request (github:alice, who asked for or pushed it, is you)"
                           " (ask another approver (allow_self_approval is off for this environment))")
    assert notices(redis, run_id) == []  # main's own policy is the trusted one: nothing to say
    assert approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings).accepted


def test_a_person_is_a_deployer_under_any_of_their_accounts(repo: Path, settings: Settings) -> None:
    trusted = policy.trusted_policy(str(repo), settings)
    prod = trusted.environment("production")
    policy.check_deploy("github:alice", "production", prod, identities=trusted.identities)
    with pytest.raises(PolicyDenied, match="github:mallory may not deploy to production"):
        policy.check_deploy("github:mallory", "production", prod, identities=trusted.identities)


def test_the_operators_policy_file_wins_over_every_branch(redis: Redis, settings: Settings, repo: Path,
                                                          tmp_path: Path,
                                                          start_router: Callable[[Settings], Router]) -> None:
    central = tmp_path / "policy.yaml"
    central.write_text("environments:\n  production:\n    approval_required: true\n    approvers: [U0DAVE]\n")
    governed = settings.with_(policy_file=central)
    start_router(governed)
    git(repo, "checkout", "-q", "no-gate")  # even the served copy's own branch says "no approval"
    run_id = deploy(redis, governed, repo, "no-gate")
    parked(redis, run_id)
    assert approvals.get(redis, run_id).approvers == ["U0DAVE"]
    assert f"the trusted policy from {central} does" in notices(redis, run_id)[0]
    central.write_text("environments:\n  production:\n    aproval_required: false\n")
    with pytest.raises(ConfigError, match=r"policy.yaml:3: environments.production.aproval_required: unknown key"):
        policy.trusted_policy(str(repo), governed)
    central.write_text("deployment: {strategy: canary}\n")
    with pytest.raises(ConfigError, match="policy.yaml:1: deployment: is not policy"):
        policy.trusted_policy(str(repo), governed)


def test_the_same_through_a_pull_request_comment(redis: Redis, settings: Settings, repo: Path,
                                                 router: Router) -> None:
    head = git(repo, "rev-parse", "no-gate")
    with fake_github() as gh:
        gh.permissions[(REPO, "alice")] = "write"
        gh.add_pull(REPO, 2, sha=head, files=["backend/app.py"])
        gh.contents[(REPO, "devops_orchestra.yaml", head)] = NO_GATE  # what GitHub has at the PR's head
        served = settings.with_(github_webhook_secret=SECRET, github_token=gh.token, github_api_url=gh.url,
                                repos=(str(repo),))
        with serve_in_thread(build_webhook_app(served, redis=redis), name="webhooks") as url:
            body, delivery = body_of(pr_comment("/orchestra deploy production", user="alice")), str(uuid.uuid4())
            request = urllib.request.Request(f"{url}/github/webhook", data=body, method="POST",
                                             headers=headers("issue_comment", body, delivery=delivery))
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 202
            result = wait_for(lambda: outcome(redis, delivery), what="the comment's outcome")
    assert result is not None and result.status == "started", result
    run_id = str(result.run_id)
    parked(redis, run_id)
    assert "`production.approval_required` is false here" in notices(redis, run_id)[0]
    for alias in ("U0ALICE", "github:alice"):  # the commenter, in Slack or on GitHub
        own = approvals.decide(run_id, user=alias, approve=True, redis=redis, settings=settings)
        assert not own.accepted and "you cannot approve your own request" in own.message
    assert RunStore(redis).get(run_id).status == RunStatus.AWAITING_APPROVAL


def test_a_cloned_repository_is_governed_by_its_remote_default_branch(repo: Path, settings: Settings,
                                                                      tmp_path: Path) -> None:
    name = f"policy-{uuid.uuid4().hex[:8]}"  # the clone cache is shared by the session and keyed by name
    remote = tmp_path / "remote" / f"{name}.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    url = f"file://{remote}"
    trusted = policy.trusted_policy(url, settings)
    assert trusted.source == f"the main branch of {name}" and trusted.environment("production").approval_required
    shutil.move(str(remote), str(tmp_path / "gone"))  # the remote cannot be reached (or another process pulls)
    again = policy.trusted_policy(url, settings)
    assert again.environment("production").approvers == ["U0BOB", "U0ALICE"]


def _everything(control: WorkspaceClient) -> list[dict[str, Any]]:
    top = control.transcript("devops-orchestra")
    return top + [r for m in top for r in m.get("replies") or []]


def test_whoever_pushed_cannot_approve_with_the_slack_button_either(redis: Redis, settings: Settings, repo: Path,
                                                                    router: Router) -> None:
    with local_slack() as (running, control):
        with bot_in_thread(settings.with_(slack_api_url=running.api_url, repos=(str(repo),)), control):
            intent = Intent(kind=IntentKind.DEPLOY, service="backend", env="production", ref="main",
                            user="github:alice", source="github", origin={"event": "push"})
            run_id = dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED).id
            parked(redis, run_id)
            ask: Any = wait_for(lambda: [m for m in _everything(control) if run_id in str(m.get("buttons"))
                                         or (m["buttons"] and "Approval needed" in m["text"])],
                                timeout=30, what="the approval request in the thread")
            control.click(ask[0]["ts"], "Approve", user="U0ALICE")
            told: Any = wait_for(lambda: [m["text"] for m in _everything(control) if m["ephemeral_to"] == "U0ALICE"],
                                 timeout=30, what="the answer only alice sees")
            assert "you cannot approve your own request" in told[0] and "github:alice" in told[0]
            assert RunStore(redis).get(run_id).status == RunStatus.AWAITING_APPROVAL
            refused = [a for a in Audit(redis).entries() if a["action"] == "approval_click_refused"]
            assert refused and refused[0]["actor"] == "U0ALICE"
            control.click(ask[0]["ts"], "Approve", user="U0BOB")
            wait_for(lambda: RunStore(redis).get(run_id).status == RunStatus.SUCCEEDED, timeout=120, interval=0.2)


def test_an_unreadable_trusted_policy_refuses_before_anything_starts(redis: Redis, settings: Settings,
                                                                     repo: Path) -> None:
    (repo / "devops_orchestra.yaml").write_text(TRUSTED.replace("approval_required: true", "approval_required: maybe"))
    git(repo, "commit", "-q", "-am", "a broken policy on main")
    (repo / "devops_orchestra.yaml").write_text(TRUSTED)  # the working tree is fine: it is not the policy
    with pytest.raises(ConfigError, match=r"Hello-World@main:devops_orchestra.yaml:\d+: environments.production."
                                          r"approval_required: must be true or false"):
        deploy(redis, settings, repo, "no-gate")
    assert RunStore(redis).recent() == []  # no half-started run
    [denied] = [a for a in Audit(redis).entries() if a["action"] == "request_denied"]
    assert denied["actor"] == "U0CAROL" and "approval_required" in denied["detail"]["reason"]


def test_a_policy_broken_while_a_run_waits_for_its_stage_fails_the_run_with_the_reason(
        redis: Redis, settings: Settings, repo: Path, start_worker: Callable[..., object]) -> None:
    stop = threading.Event()
    router = threading.Thread(target=Router(redis, settings, graph=GATED, name="test-router").run, args=(stop,),
                              daemon=True)
    router.start()
    try:
        run_id = deploy(redis, settings, repo, "main")  # queued: no worker yet
        (repo / "devops_orchestra.yaml").write_text("environments: [not, a, mapping]\n")
        git(repo, "commit", "-q", "-am", "a broken policy on main")
        start_worker("--no-router")
        wait_for(lambda: RunStore(redis).get(run_id).status.finished, timeout=120, interval=0.2)
        run = RunStore(redis).get(run_id)
        assert run.status == RunStatus.FAILED and "problem(s) in the configuration" in str(run.reason)
        assert EventType.TEST_RESULTS not in [e.type for e in EventBus(redis).replay(run_id)]
    finally:
        stop.set()
        router.join(timeout=10)
