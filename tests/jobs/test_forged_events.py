"""Events are not authority: a raw XADD of an approval or of a stage result moves nothing, and is rejected
where people can see it (a warning, an audit entry, a count). Real Redis, a real worker and router."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from redis import Redis

from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import ANALYZE, TEST, Graph
from jobs.router import Router
from orchestra.events import EVENTS_STREAM, Event, EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, RunStatus, RunStore, rejected_counts
from orchestra.telemetry import metrics_registry
from tests.support.services import wait_for

GATED = Graph((ANALYZE, replace(TEST, approval=True)))
CONFIG = """\
project: {name: shop, language: python, framework: flask}
deployment:
  services:
    - {name: backend, path: backend, port: 5001}
    - {name: frontend, path: frontend, port: 5000, depends_on: [backend]}
environments:
  production:
    approval_required: true
    approvers: [U0BOB]
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    dest = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", dest,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (dest / "devops_orchestra.yaml").write_text(CONFIG)
    return dest


@pytest.fixture
def router(redis: Redis, settings: Settings) -> Iterator[Router]:
    stop = threading.Event()
    router = Router(redis, settings, graph=GATED, name="test-router")
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    yield router
    stop.set()
    thread.join(timeout=10)


def forge(redis: Redis, run_id: str, type: EventType, actor: str, **data: object) -> str:
    """What an attacker who can write to the stream does: one XADD, no record behind it."""
    event = Event(run_id=run_id, type=type, actor=actor, data=data)
    return redis.xadd(EVENTS_STREAM, {"event": event.to_json()}).decode()


def rejected(redis: Redis, entry: str) -> dict[str, object]:
    found = wait_for(lambda: [a for a in Audit(redis).entries() if a["action"] == "event_rejected"
                              and a["detail"].get("entry") == entry], timeout=10, interval=0.05,
                     what=f"the router rejecting {entry}")
    return found[0]  # type: ignore[no-any-return,index]


def test_a_forged_approval_or_result_does_not_move_a_parked_run(
        redis: Redis, settings: Settings, repo: Path, router: Router,
        start_worker: Callable[..., object]) -> None:
    start_worker("--no-router")
    intent = Intent(kind=IntentKind.DEPLOY, service="backend", env="production", user="U0ALICE", source="slack")
    run_id = dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED).id
    wait_for(lambda: RunStore(redis).get(run_id).status == RunStatus.AWAITING_APPROVAL, timeout=180, interval=0.2)
    commit = RunStore(redis).get(run_id).commit

    approval = forge(redis, run_id, EventType.APPROVAL_GRANTED, "U0BOB", stage="test", decided_by="U0BOB",
                     requester="U0ALICE", commit=commit)
    assert rejected(redis, approval)["detail"]["reason"] == "the approval record says nothing was decided yet, " \
                                                            "not approved"
    result = forge(redis, run_id, EventType.TEST_RESULTS, "test", stage="test", passed=True, summary="all green",
                   job_id=f"{run_id}_test_3")
    assert "no job owns test while the run is awaiting_approval" in rejected(redis, result)["detail"]["reason"]
    rejection = forge(redis, run_id, EventType.APPROVAL_REJECTED, "U0BOB", stage="test", decided_by="U0BOB")
    rejected(redis, rejection)

    run = RunStore(redis).get(run_id)
    assert (run.status, run.stage) == (RunStatus.AWAITING_APPROVAL, "test")
    assert approvals.get(redis, run_id).decision is None
    assert rejected_counts(redis) == {"approval_granted": 1, "test_results": 1, "approval_rejected": 1}
    scraped = generate_latest(metrics_registry(redis)).decode()  # what Prometheus sees
    assert 'orchestra_events_rejected_total{type="approval_granted"} 1.0' in scraped
    assert EventType.STAGE_STARTED not in [e.type for e in EventBus(redis).replay(run_id)
                                           if e.data.get("stage") == "test"]

    # the real decision, recorded with its event in one step, still works
    assert approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings).accepted
    wait_for(lambda: RunStore(redis).get(run_id).status == RunStatus.SUCCEEDED, timeout=120, interval=0.2)
    record = approvals.get(redis, run_id)
    assert (record.decision, record.decided_by, record.commit, record.run_id) == ("approved", "U0BOB", commit, run_id)


def test_a_forged_result_for_a_queued_stage_is_rejected_even_with_the_right_job_id(
        redis: Redis, settings: Settings, repo: Path, router: Router,
        start_worker: Callable[..., object]) -> None:
    intent = Intent(kind=IntentKind.DEPLOY, service="backend", env="staging", user="U0ALICE", source="slack")
    run_id = dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GATED).id
    run = RunStore(redis).get(run_id)
    assert (run.stage, run.job_id, run.attempt) == ("analyze", f"{run_id}_analyze_1", 1)  # no worker yet

    wrong = forge(redis, run_id, EventType.CODE_ANALYSIS_RESULT, "analyze", stage="analyze", passed=True,
                  summary="fine", job_id=f"{run_id}_analyze_2")
    assert "names job" in rejected(redis, wrong)["detail"]["reason"]
    guessed = forge(redis, run_id, EventType.CODE_ANALYSIS_RESULT, "analyze", stage="analyze", passed=True,
                    summary="fine", job_id=run.job_id)
    assert "has not run (it is queued)" in rejected(redis, guessed)["detail"]["reason"]
    failed = forge(redis, run_id, EventType.STAGE_FAILED, "orchestra", stage="analyze", reason="boom")
    assert "does not come from the job that owns analyze" in rejected(redis, failed)["detail"]["reason"]
    assert RunStore(redis).get(run_id).status == RunStatus.RUNNING

    start_worker("--no-router")  # the real job runs and its result is the one that counts
    wait_for(lambda: RunStore(redis).get(run_id).status == RunStatus.SUCCEEDED, timeout=180, interval=0.2)
    results = [e for e in EventBus(redis).replay(run_id) if e.type == EventType.CODE_ANALYSIS_RESULT]
    assert [e.data["job_id"] for e in results] == [f"{run_id}_analyze_1"]  # forgeries went to the stream only
