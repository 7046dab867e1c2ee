"""A worker SIGKILLed in the middle of an apply: the run fails with an event, the workspace's apply lock is free
for the next apply, and Terraform, told by the kernel that its worker died, stops the way it does on Ctrl-C:
what it had made is in the state, its state lock is released, nothing keeps running on its own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.iac import apply
from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import IAC, IAC_APPLY, Graph
from jobs.router import Router
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import Locks
from orchestra.settings import Settings
from orchestra.store import RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.processes import children_of, descendants
from tests.support.services import wait_for

pytestmark = pytest.mark.skipif(subprocess.run(["which", "terraform"], capture_output=True).returncode != 0,
                                reason="terraform is not on PATH")
GRAPH = Graph((IAC, IAC_APPLY))
CONFIG = """\
project: {name: shop}
deployment:
  services:
    - {name: web, path: web, port: 8000, runtime: docker}
infrastructure: {tool: terraform, path: infra}
"""
MAIN_TF = """\
resource "terraform_data" "first" {
  input = "one"
}

resource "terraform_data" "slow" {
  input = terraform_data.first.output

  provisioner "local-exec" {
    command = "sleep 120"
  }
}
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def below(pid: int) -> dict[int, str]:
    """Every process below ``pid``, with its command line."""
    found = {}
    for child in descendants(pid):
        try:
            found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
    return found


@pytest.fixture
def worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=orchestra_env(settings),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_worker_killed_mid_apply_fails_the_run_frees_the_lock_and_terraform_stops_cleanly(
        redis: Redis, settings: Settings, tmp_path: Path, worker: subprocess.Popen[bytes]) -> None:
    repo = tmp_path / "shop"
    (repo / "infra").mkdir(parents=True)
    (repo / "web").mkdir()
    (repo / "web" / "app.py").write_text("")
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    (repo / "infra" / "main.tf").write_text(MAIN_TF)
    state = tmp_path / "state" / "shop.tfstate"
    (repo / "infra" / "backend.tf").write_text(f'terraform {{\n  backend "local" {{\n    path = "{state}"\n  }}\n}}\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "slow infrastructure")
    stop = threading.Event()
    router = Router(redis, settings, graph=GRAPH, name="survivor")
    threading.Thread(target=router.run, args=(stop,), daemon=True).start()
    try:
        run = dispatch(Intent(kind=IntentKind.DEPLOY, env="staging", user="U0ALICE", source="slack"), redis=redis,
                       settings=settings, repo=repo, graph=GRAPH)
        wait_for(lambda: RunStore(redis).get(run.id).status == RunStatus.AWAITING_APPROVAL, timeout=60, interval=0.2,
                 what="the run to wait for an approval")
        assert approvals.decide(run.id, user="U0BOB", approve=True, redis=redis, settings=settings).accepted
        wait_for(lambda: any("sleep 120" in c for c in below(worker.pid).values()), timeout=60, interval=0.2,
                 what="the apply to reach the slow resource")
        tree = below(worker.pid)
        terraform = [pid for pid, cmd in tree.items() if " apply " in f" {cmd} " and "terraform" in cmd]
        horses = [child for _, child in children_of().get(worker.pid, [])]
        assert terraform and horses
        for pid in [worker.pid, *horses]:  # the worker and its work horse; Terraform is left to notice
            os.kill(pid, signal.SIGKILL)
        worker.wait(timeout=10)

        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in terraform), timeout=30, interval=0.2,
                 what="terraform to stop once its worker died")
        wait_for(lambda: RunStore(redis).get(run.id).status.finished, timeout=60, interval=0.2, what="the run to end")
    finally:
        stop.set()
    events = EventBus(redis).replay(run.id)
    failed = [e for e in events if e.type == EventType.STAGE_FAILED]
    assert RunStore(redis).get(run.id).status == RunStatus.FAILED
    assert len(failed) == 1 and failed[0].data["stage"] == "iac_apply"
    assert "stopped in the middle" in failed[0].data["reason"]
    assert events[-1].type == EventType.RUN_FINISHED

    name = apply.LOCK_NAME.format(project="shop")
    assert Locks(redis).holder(name, "staging") is None  # expired: nobody renews a dead worker's lock
    with apply.workspace_lock(redis, name, "staging", run_id="r-next", owner="U0CAROL", wait_s=0):
        pass  # the next apply of the workspace gets it at once
    assert not (state.parent / ".shop.tfstate.lock.info").exists()  # Terraform released its own state lock
    resources = {r["name"]: r for r in json.loads(state.read_text())["resources"]}
    assert "first" in resources  # made before the kill, and kept in the state
    # the resource whose provisioner was interrupted is never kept as finished: Terraform records it tainted (the
    # next apply replaces it), or, when the interrupt reaches it first, not at all (the next apply makes it)
    if "slow" in resources:
        assert [i.get("status") for i in resources["slow"]["instances"]] == ["tainted"]
