"""Risk routes the run, through the real path: git branches of the shop, a real worker runs the analyze stage,
the router (real Redis) parks or finishes the run. A high-risk change to staging (which requires no approval)
parks for the environment's approvers and goes canary with a small first step, even from a branch that
rewrites its own `risk:` and asks for blue-green; a docs-only change finishes without building anything."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from agents.analysis.route import NOTHING_TO_DO
from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import ANALYZE, TEST, Graph
from jobs.router import Router
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import Locks
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import RunStatus, RunStore
from tests.jobs.test_trusted_policy import git
from tests.support.services import wait_for

GATED = Graph((ANALYZE, replace(TEST, approval=True)))  # the test stage stands in for deploy

TRUSTED = """\
project: {name: shop, language: python, framework: flask}
deployment:
  services:
    - {name: backend, path: backend, port: 5001}
    - {name: frontend, path: frontend, port: 5000, depends_on: [backend]}
environments:
  staging:
    approval_required: false
    approvers: [U0BOB, U0ALICE]
"""
SOFTENED = TRUSTED + "risk:\n  docs_only: deploy\n  high: {}\n"  # the branch's own, laxer path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The shop with the default risk policy on main; a branch with a migration that also rewrites `risk:`,
    and a branch that changes documentation only."""
    dest = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", dest,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (dest / "devops_orchestra.yaml").write_text(TRUSTED)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "shop")
    git(dest, "checkout", "-q", "-b", "add-email", "main")
    (dest / "backend" / "migrations").mkdir()
    (dest / "backend" / "migrations" / "0002_add_email.sql").write_text("ALTER TABLE users ADD COLUMN email TEXT;\n")
    (dest / "devops_orchestra.yaml").write_text(SOFTENED)
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "users get an email column; no approval or canary for it")
    git(dest, "checkout", "-q", "-b", "docs", "main")
    (dest / "README.md").write_text((dest / "README.md").read_text() + "\nA note on delivery times.\n")
    git(dest, "commit", "-q", "-am", "README: delivery times")
    git(dest, "checkout", "-q", "main")
    return dest


@pytest.fixture
def router(redis: Redis, settings: Settings, start_worker: Callable[..., object]) -> Iterator[Router]:
    start_worker("--no-router")
    stop = threading.Event()
    router = Router(redis, settings, graph=GATED, name="test-router")
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    yield router
    stop.set()
    thread.join(timeout=10)


def deploy(redis: Redis, settings: Settings, repo: Path, ref: str, *, strategy: str | None = None) -> str:
    intent = Intent(kind=IntentKind.DEPLOY, service="backend", env="staging", ref=ref, user="U0CAROL",
                    source="slack", strategy=strategy)
    return dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED).id


def settled(redis: Redis, run_id: str) -> None:
    wait_for(lambda: RunStore(redis).get(run_id).status in (RunStatus.AWAITING_APPROVAL, RunStatus.SUCCEEDED,
                                                            RunStatus.FAILED),
             timeout=120, interval=0.1, what=f"run {run_id} to park or end")


def test_a_high_risk_change_parks_for_an_approval_and_goes_canary(redis: Redis, settings: Settings, repo: Path,
                                                                  router: Router) -> None:
    run_id = deploy(redis, settings, repo, "add-email", strategy="blue-green")
    settled(redis, run_id)
    run = RunStore(redis).get(run_id)
    assert run.status == RunStatus.AWAITING_APPROVAL, (run.status, run.reason)
    assert (run.strategy, run.canary_steps, run.watch_s) == ("canary", [5, 25, 50, 100], 900.0)
    assert run.requested_strategy == "blue-green" and run.stage == "test"
    events = EventBus(redis).replay(run_id)
    route = next(e for e in events if e.type == EventType.ROUTE_DECIDED).data
    assert route["risk"] == "high" and route["requested"] == "blue-green"
    assert route["chosen"] == {"strategy": "canary", "canary_steps": [5, 25, 50, 100], "watch_s": 900.0,
                               "approval": True}
    assert route["policy"]["approval"] is True  # the trusted policy's, not the branch's `high: {}`
    assert "no laxer than canary (risk.high.strategy)" in route["summary"]
    assert any("database migration (backend/migrations/0002_add_email.sql)" in r for r in route["reasons"])
    asked = next(e for e in events if e.type == EventType.APPROVAL_REQUESTED).data
    assert asked["stage"] == "test" and asked["approvers"] == ["U0BOB", "U0ALICE"]
    assert asked["message"].startswith("high risk (") and "risk.high.approval" in asked["message"]
    assert any(e.type == EventType.POLICY_DENIED and "`risk` differs" in str(e.data) for e in events)

    own = approvals.decide(run_id, user="U0CAROL", approve=True, redis=redis, settings=settings)
    stranger = approvals.decide(run_id, user="U0MALLORY", approve=True, redis=redis, settings=settings)
    assert not own.accepted and not stranger.accepted and "may not approve" in stranger.message
    assert approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings).accepted
    wait_for(lambda: RunStore(redis).get(run_id).status.finished, timeout=120, interval=0.1,
             what="the approved run to go on and end")
    after = RunStore(redis).get(run_id)
    assert after.status == RunStatus.SUCCEEDED, after.reason
    kinds = [e.type for e in EventBus(redis).replay(run_id)]
    assert kinds.index(EventType.APPROVAL_GRANTED) < kinds.index(EventType.TEST_RESULTS)


def test_a_docs_only_change_finishes_without_building(redis: Redis, settings: Settings, repo: Path,
                                                      router: Router) -> None:
    run_id = deploy(redis, settings, repo, "docs")
    settled(redis, run_id)
    run = RunStore(redis).get(run_id)
    assert (run.status, run.reason, run.stage) == (RunStatus.SUCCEEDED, NOTHING_TO_DO, "analyze")
    kinds = [e.type for e in EventBus(redis).replay(run_id)]
    assert EventType.ROUTE_DECIDED in kinds and EventType.APPROVAL_REQUESTED not in kinds
    assert [e.data.get("stage") for e in EventBus(redis).replay(run_id)
            if e.type == EventType.STAGE_STARTED] == ["analyze"]
    assert Locks(redis).holder("backend", "staging") is None  # its deploy lock went with it
