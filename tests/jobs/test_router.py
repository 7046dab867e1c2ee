"""The router and approvals: a run parks before a gated stage, and exactly one valid decision moves it."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import ANALYZE, TEST, Graph
from jobs.router import Router
from orchestra.errors import LockHeld, NotFound, PolicyDenied
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import Locks
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, RunStatus, RunStore
from tests.support.services import wait_for

# The test stage stands in for a gated one: the graph is the router's parameter.
GATED = Graph((ANALYZE, replace(TEST, approval=True)))

CONFIG = """\
project: {name: shop, language: python, framework: flask}
deployment:
  strategy: blue-green
  services:
    - {name: backend, path: backend, port: 5001}
    - {name: frontend, path: frontend, port: 5000, depends_on: [backend]}
environments:
  production:
    approval_required: true
    approvers: [U0ALICE, U0BOB, U0CAROL]
    deployers: [U0ALICE, U0BOB]
  staging:
    approval_required: false
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    dest = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", dest,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (dest / "devops_orchestra.yaml").write_text(CONFIG)
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


def deploy(redis: Redis, settings: Settings, repo: Path, *, user: str = "U0ALICE", env: str = "production",
           service: str | None = "backend") -> str:
    intent = Intent(kind=IntentKind.DEPLOY, service=service, env=env, user=user, source="slack")
    return dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED).id


def status_becomes(redis: Redis, run_id: str, status: RunStatus, timeout: float = 120) -> None:
    wait_for(lambda: RunStore(redis).get(run_id).status == status, timeout=timeout, interval=0.1,
             what=f"run {run_id} {status}")


def types(redis: Redis, run_id: str) -> list[EventType]:
    return [e.type for e in EventBus(redis).replay(run_id)]


def test_production_parks_until_a_valid_approver_says_yes(redis: Redis, settings: Settings, repo: Path,
                                                          router: Router) -> None:
    run_id = deploy(redis, settings, repo)
    status_becomes(redis, run_id, RunStatus.AWAITING_APPROVAL)
    asked = next(e for e in EventBus(redis).replay(run_id) if e.type == EventType.APPROVAL_REQUESTED)
    assert asked.data["stage"] == "test" and asked.data["approvers"] == ["U0ALICE", "U0BOB", "U0CAROL"]
    assert EventType.STAGE_STARTED in types(redis, run_id)  # analyze ran; the gated stage did not

    own = approvals.decide(run_id, user="U0ALICE", approve=True, redis=redis, settings=settings)
    assert not own.accepted and "your own request" in own.message
    stranger = approvals.decide(run_id, user="U0MALLORY", approve=True, redis=redis, settings=settings)
    assert not stranger.accepted and "may not approve" in stranger.message
    assert RunStore(redis).get(run_id).status == RunStatus.AWAITING_APPROVAL

    yes = approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings)
    double = approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings)
    second = approvals.decide(run_id, user="U0CAROL", approve=False, redis=redis, settings=settings)
    assert yes.accepted and yes.message == "approved by U0BOB"
    assert not double.accepted and double.message == "already approved by U0BOB"
    assert not second.accepted and second.message == "already approved by U0BOB"

    status_becomes(redis, run_id, RunStatus.SUCCEEDED)
    seen = types(redis, run_id)
    assert seen.count(EventType.APPROVAL_GRANTED) == 1 and seen.count(EventType.TEST_RESULTS) == 1
    assert seen.index(EventType.APPROVAL_GRANTED) < seen.index(EventType.TEST_RESULTS)
    actions = [(a["action"], a["actor"]) for a in Audit(redis).entries()]
    assert ("approval_approved", "U0BOB") in actions and ("approval_refused", "U0MALLORY") in actions


def test_a_rejection_ends_the_run_and_says_who(redis: Redis, settings: Settings, repo: Path,
                                               router: Router) -> None:
    run_id = deploy(redis, settings, repo)
    status_becomes(redis, run_id, RunStatus.AWAITING_APPROVAL)
    assert approvals.decide(run_id, user="U0CAROL", approve=False, redis=redis, settings=settings).accepted
    status_becomes(redis, run_id, RunStatus.REJECTED, timeout=10)
    assert RunStore(redis).get(run_id).reason == "approval rejected by U0CAROL"
    assert EventType.TEST_RESULTS not in types(redis, run_id)


def test_an_expired_request_cannot_be_approved(redis: Redis, settings: Settings, repo: Path,
                                               router: Router) -> None:
    run_id = deploy(redis, settings, repo)
    status_becomes(redis, run_id, RunStatus.AWAITING_APPROVAL)
    deadline = approvals.get(redis, run_id).deadline
    assert approvals.expire_if_due(redis, run_id, now=deadline + 1)
    late = approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings)
    assert not late.accepted and "expired" in late.message
    status_becomes(redis, run_id, RunStatus.REJECTED, timeout=10)
    assert RunStore(redis).get(run_id).reason == "approval expired"


def test_a_changed_request_is_not_approved(redis: Redis, settings: Settings, repo: Path, router: Router) -> None:
    run_id = deploy(redis, settings, repo)
    status_becomes(redis, run_id, RunStatus.AWAITING_APPROVAL)
    redis.set(approvals.APPROVAL_KEY.format(run_id=run_id),
              approvals.get(redis, run_id).model_copy(update={"commit": "3f9c2ab0"}).model_dump_json())
    stale = approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings, commit="aaaa1111")
    assert not stale.accepted and "request changed" in stale.message
    assert RunStore(redis).get(run_id).status == RunStatus.AWAITING_APPROVAL


def test_staging_needs_no_approval(redis: Redis, settings: Settings, repo: Path, router: Router) -> None:
    run_id = deploy(redis, settings, repo, env="staging")
    status_becomes(redis, run_id, RunStatus.SUCCEEDED)
    assert EventType.APPROVAL_REQUESTED not in types(redis, run_id)


def test_a_redelivered_result_changes_nothing(redis: Redis, settings: Settings, repo: Path, router: Router) -> None:
    run_id = deploy(redis, settings, repo, env="staging")
    status_becomes(redis, run_id, RunStatus.SUCCEEDED)
    result = next(e for e in EventBus(redis).replay(run_id) if e.type == EventType.CODE_ANALYSIS_RESULT)
    router.handle(result)
    assert types(redis, run_id).count(EventType.STAGE_STARTED) == 2  # analyze and test, once each


def test_dispatch_refuses_what_policy_forbids_and_records_it(redis: Redis, settings: Settings, repo: Path) -> None:
    with pytest.raises(PolicyDenied, match="may not deploy to production"):
        deploy(redis, settings, repo, user="U0CAROL")
    with pytest.raises(NotFound, match="unknown service `payment`"):
        deploy(redis, settings, repo, service="payment")
    assert RunStore(redis).recent() == []
    assert Audit(redis).entries()[-1]["action"] == "request_denied"


def test_a_second_deploy_is_told_who_holds_the_lock(redis: Redis, settings: Settings, repo: Path) -> None:
    first = deploy(redis, settings, repo, env="staging")
    second = deploy(redis, settings, repo, user="U0BOB", env="staging")
    [waiting] = [e for e in EventBus(redis).replay(second) if e.type == EventType.LOCK_WAITING]
    assert f"being deployed by U0ALICE (run {first}); this run is number 1 in the queue" in waiting.data["summary"]
    assert Locks(redis).queue("backend", "staging") == [second]
    intent = Intent(kind=IntentKind.DEPLOY, service="backend", env="staging", user="U0CAROL", source="slack",
                    no_wait=True)
    with pytest.raises(LockHeld, match=f"being deployed by U0ALICE \\(run {first}\\)") as refused:
        dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED)
    assert "without --no-wait" in str(refused.value)
    assert [a["action"] for a in Audit(redis).entries()] == ["run_admitted", "run_queued", "run_refused"]


def test_a_finish_and_its_event_and_audit_entry_are_one_step_even_when_finishes_race(
        redis: Redis, settings: Settings, repo: Path) -> None:
    """Eight routers finishing one run at once: one finish, one run_finished event, one audit entry, all
    written by the transaction that finished it (a crash between them cannot leave one without the others)."""
    run_id = deploy(redis, settings, repo, env="staging")
    routers = [Router(redis, settings, name=f"r{i}") for i in range(8)]
    ready = threading.Barrier(len(routers))

    def finish(router: Router, n: int) -> None:
        ready.wait()
        router._finish(run_id, RunStatus.FAILED, f"stopped by router {n}")

    threads = [threading.Thread(target=finish, args=(r, n)) for n, r in enumerate(routers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    finished = RunStore(redis).get(run_id)
    events = [e for e in EventBus(redis).replay(run_id) if e.type == EventType.RUN_FINISHED]
    audited = [e for e in Audit(redis).entries(500) if e["action"] == "run_finished" and e["run_id"] == run_id]
    assert finished.status == RunStatus.FAILED and len(events) == 1 and len(audited) == 1
    assert events[0].data["reason"] == audited[0]["detail"]["reason"] == finished.reason
