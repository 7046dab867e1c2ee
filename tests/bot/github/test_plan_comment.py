"""`/orchestra plan [env]` on a pull request: what a deploy would do, and a plan run of the head commit's Terraform
(the iac stage alone: nothing applied, no deploy lock) for a writer on a same-repository pull request only."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis

from bot.github import texts
from bot.github.client import GitHubClient
from bot.github.receiver import build_webhook_app
from bot.github.relay import GitHubRelay
from jobs.graph import PIPELINE
from jobs.router import Router
from orchestra.locks import Locks
from orchestra.settings import Settings
from orchestra.store import RunStatus, RunStore
from tests.bot.github.test_receiver import CONFIG, Hook, _comment, _git
from tests.jobs.conftest import orchestra_env
from tests.support.fake_github import fake_github, serve_in_thread
from tests.support.github_payloads import PR_SHA, REPO, SECRET
from tests.support.services import wait_for


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    served = tmp_path / "Codertocat" / "Hello-World"
    for folder in ("frontend", "backend"):
        (served / folder).mkdir(parents=True)
        (served / folder / "app.py").write_text("print('hello')\n")
    (served / "devops_orchestra.yaml").write_text(CONFIG)
    return served


@pytest.fixture
def hook(settings: Settings, redis: Redis, repo: Path) -> Iterator[Hook]:
    """The webhook receiver over HTTP, with the local GitHub API server."""
    with fake_github() as gh:
        served = settings.with_(github_webhook_secret=SECRET, github_token=gh.token, github_api_url=gh.url,
                                repos=(str(repo),))
        with serve_in_thread(build_webhook_app(served, redis=redis), name="webhooks") as url:
            yield Hook(url, redis, gh)


def test_a_writers_plan_starts_a_plan_run_of_the_head_commit_for_the_named_environment(hook: Hook) -> None:
    hook.gh.permissions[(REPO, "alice")] = "write"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["frontend/app.py"])
    result, replies = _comment(hook, "/orchestra plan prod", "alice")
    assert result.status == "started" and result.run_id
    run = RunStore(hook.redis).get(result.run_id)
    assert (run.kind, run.env, run.commit, run.requested_by, run.origin["pr"]) == \
        ("plan", "production", PR_SHA, "github:alice", 2)
    assert [s.name for s in PIPELINE.stages if s.applies_to(run)] == ["iac"]  # checks and plan; no apply, no deploy
    assert run.fence == {} and Locks(hook.redis).holder("frontend", "production") is None
    [answer] = replies
    assert "**Plan for #2** at `ec26c3e`" in answer  # what a deploy would do, as before
    assert texts.PLAN_STARTED.format(sha=PR_SHA[:7], env="production", run_id=run.id) in answer


def test_plan_without_an_environment_plans_for_staging(hook: Hook) -> None:
    hook.gh.permissions[(REPO, "alice")] = "admin"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
    result, _ = _comment(hook, "/orchestra plan", "alice")
    assert RunStore(hook.redis).get(str(result.run_id)).env == "staging"


@pytest.mark.parametrize(("user", "permission", "head", "said"), [
    ("reader", "read", REPO, texts.PLAN_NEEDS_WRITE),
    ("triager", "triage", REPO, texts.PLAN_NEEDS_WRITE),
    ("alice", "write", "mallory/Hello-World", texts.PLAN_FROM_FORK),  # a fork's Terraform never runs here
])
def test_a_reader_or_a_forks_pull_request_gets_the_deploy_plan_but_no_terraform_run(
        hook: Hook, user: str, permission: str, head: str, said: str) -> None:
    hook.gh.permissions[(REPO, user)] = permission
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, head_repo=head, files=["frontend/app.py"])
    result, replies = _comment(hook, "/orchestra plan", user)
    assert result.status == "answered" and RunStore(hook.redis).recent() == []
    assert "**Plan for #2**" in replies[0] and replies[0].endswith(said)


def test_an_outsiders_plan_is_refused(hook: Hook) -> None:
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["frontend/app.py"])
    result, replies = _comment(hook, "/orchestra plan", "stranger")
    assert result.status == "refused" and replies == [texts.NOT_ALLOWED] and RunStore(hook.redis).recent() == []


@pytest.mark.parametrize(("body", "said"), [
    ("/orchestra plan nowhere", "unknown environment `nowhere`; use one of production, staging, development"),
    ("/orchestra plan prod now", "`/orchestra plan` takes one environment, not `prod now`"),
])
def test_a_plan_for_no_known_environment_is_explained_and_starts_nothing(hook: Hook, body: str, said: str) -> None:
    hook.gh.permissions[(REPO, "alice")] = "write"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["frontend/app.py"])
    result, replies = _comment(hook, body, "alice")
    assert result.status == "ignored" and said in replies[0] and RunStore(hook.redis).recent() == []


INFRA = 'resource "terraform_data" "marker" {\n  input = "hello"\n}\n'  # built in: no provider to fetch


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_the_plan_run_answers_in_its_pr_comment_with_terraforms_plan(hook: Hook, repo: Path,
                                                                     settings: Settings) -> None:
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text(INFRA)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "infra")
    sha = _git(repo, "rev-parse", "HEAD")
    hook.gh.permissions[(REPO, "alice")] = "write"
    hook.gh.add_pull(REPO, 2, sha=sha, files=["infra/main.tf"])
    with pipeline(settings.with_(repos=(str(repo),)), hook):
        result, _ = _comment(hook, "/orchestra plan", "alice")
        run_id = str(result.run_id)
        wait_for(lambda: RunStore(hook.redis).get(run_id).status.finished, timeout=90, interval=0.2,
                 what="the plan run")
        wait_for(lambda: any("Planned (for staging)" in b for b in hook.gh.comment_bodies(REPO, 2)), timeout=20,
                 what="the run's comment")
    body = next(b for b in hook.gh.comment_bodies(REPO, 2) if "Planned (for staging)" in b)
    assert RunStore(hook.redis).get(run_id).status == RunStatus.SUCCEEDED
    assert "**Terraform plan**: `terraform 1." in body and "**1 to add, 0 to change, 0 to destroy**" in body
    assert "| add | `terraform_data` | 1 |" in body and "| iac | passed |" in body
    assert "hello" not in body.lower().replace("hello-world", "")  # the resource's value stays out
    assert RunStore(hook.redis).get(run_id).commit == sha
    assert [s for _, s in hook.gh.status_states(REPO, sha)][-1] == "success"


@contextmanager
def pipeline(settings: Settings, github: Hook) -> Iterator[None]:
    """A real worker process, the router and the GitHub relay, all on the test's Redis."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=orchestra_env(settings),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    router = Router(Redis.from_url(settings.redis_url), settings, name="plan-router")

    async def relay() -> None:
        async with GitHubClient(github.gh.token, base_url=github.gh.url) as client:
            await GitHubRelay(settings, redis=Redis.from_url(settings.redis_url), client=client).run(stop, block_ms=100)

    threads = [threading.Thread(target=router.run, args=(stop,), daemon=True),
               threading.Thread(target=lambda: asyncio.run(relay()), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
