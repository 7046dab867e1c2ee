"""The iac_apply stage in the pipeline: the router parks a run whose plan changes something for one approval that
also covers the gated stages after it, and a run whose plan changes nothing goes past iac_apply without one.
A real worker process, the router in this process, the real terraform on ``terraform_data`` (no provider)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import ANALYZE, IAC, IAC_APPLY, Graph
from jobs.router import Router
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.services import wait_for

pytestmark = pytest.mark.skipif(subprocess.run(["which", "terraform"], capture_output=True).returncode != 0,
                                reason="terraform is not on PATH")
# A gated stage after iac_apply stands in for migrate and deploy (the graph is the router's parameter).
GRAPH = Graph((IAC, IAC_APPLY, replace(ANALYZE, approval=True)))
CONFIG = """\
project: {name: shop, language: python}
deployment:
  services:
    - {name: web, path: web, port: 8000, runtime: docker}
infrastructure: {tool: terraform, path: infra}
environments:
  staging: {approval_required: true, approvers: [U0BOB]}
"""
MAIN_TF = """\
terraform {
  backend "local" {
    path = "STATE"
  }
}

resource "terraform_data" "web" {
  input = "web-v1"
}

output "web" {
  value = terraform_data.web.output
}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "shop"
    for name, text in {"devops_orchestra.yaml": CONFIG, "web/app.py": "def answer() -> int:\n    return 42\n",
                       "web/requirements.txt": "",
                       "infra/main.tf": MAIN_TF.replace("STATE", str(tmp_path / "state" / "shop.tfstate"))}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "the shop"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return repo


@pytest.fixture
def pipeline(redis: Redis, settings: Settings) -> Iterator[None]:
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=orchestra_env(settings),
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    router = threading.Thread(target=Router(redis, settings, graph=GRAPH, name="test-router").run, args=(stop,),
                              daemon=True)
    router.start()
    yield
    stop.set()
    router.join(timeout=10)
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def deploy(redis: Redis, settings: Settings, repo: Path) -> str:
    intent = Intent(kind=IntentKind.DEPLOY, env="staging", user="U0ALICE", source="slack")
    run_id = dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GRAPH).id
    wait_for(lambda: RunStore(redis).get(run_id).status in (RunStatus.AWAITING_APPROVAL, RunStatus.SUCCEEDED,
                                                            RunStatus.FAILED), timeout=60, interval=0.1,
             what=f"run {run_id} to park or end")
    return run_id


def test_one_approval_of_the_plan_covers_the_run_and_an_unchanged_plan_asks_for_none(
        redis: Redis, settings: Settings, repo: Path, pipeline: None) -> None:
    bus = EventBus(redis)
    first = deploy(redis, settings, repo)
    run = RunStore(redis).get(first)
    assert (run.status, run.stage) == (RunStatus.AWAITING_APPROVAL, "iac_apply"), run.reason
    assert approvals.decide(first, user="U0BOB", approve=True, redis=redis, settings=settings).accepted
    wait_for(lambda: RunStore(redis).get(first).status.finished or RunStore(redis).get(first).stage == "analyze"
             and RunStore(redis).get(first).status == RunStatus.AWAITING_APPROVAL, timeout=120, interval=0.2,
             what="the run to end, or park again before the gated stage")
    run = RunStore(redis).get(first)
    assert run.status == RunStatus.SUCCEEDED, run.reason  # the gated stage after iac_apply did not park again
    assert [e.type for e in bus.replay(first)].count(EventType.APPROVAL_REQUESTED) == 1
    assert run.iac_outputs == {"web": "web-v1"}

    second = deploy(redis, settings, repo)  # the same commit: the plan changes nothing
    run = RunStore(redis).get(second)
    planned = next(e for e in bus.replay(second) if e.type == EventType.IAC_READY).data
    assert planned["plan"]["summary"] == "0 to add, 0 to change, 0 to destroy"
    assert "nothing was applied: the plan changes nothing" in planned["summary"]
    # past iac_apply without an approval; the environment's own gate (approval_required) is the next stop
    assert (run.status, run.stage) == (RunStatus.AWAITING_APPROVAL, "analyze"), run.reason
    asked = [e for e in bus.replay(second) if e.type == EventType.APPROVAL_REQUESTED]
    assert [e.data["stage"] for e in asked] == ["analyze"] and "Terraform" not in asked[0].data.get("message", "")
