"""`/orchestra drift staging` from Slack to the thread's answer: the handler starts a drift run (no deploy lock),
the router gives its one stage to a real worker process, which plans the repository's Terraform with the real
terraform and AWS provider against moto_server, and the run's event names the resource changed through boto3."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from bot.slack import views
from handlers.intake import handle
from handlers.reply import ReplyKind, Who
from jobs.router import Router
from orchestra.events import EventBus, EventType
from orchestra.locks import Locks
from orchestra.parse import parse
from orchestra.settings import Settings
from orchestra.store import RunStatus, RunStore
from tests.agents.iac.test_drift import CONFIG, MAIN_TF, Infra, _group
from tests.jobs.conftest import orchestra_env
from tests.support.moto import CREDENTIALS, REGION, aws_env, reset, session
from tests.support.services import wait_for

pytestmark = pytest.mark.slow
ALICE = Who("U0ALICE", place="C0INFRA", via="command")


@pytest.fixture
def worker(settings: Settings, provider_mirror: Path, moto: str) -> Iterator[Settings]:
    """A real `orchestra worker` with the AWS endpoint and the provider mirror, and a router in this process."""
    settings = settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None)
    env = {**orchestra_env(settings), "ORCHESTRA_TERRAFORM_MIRROR": str(provider_mirror), "AWS_ENDPOINT_URL": moto,
           "AWS_DEFAULT_REGION": REGION, **CREDENTIALS}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    router = Router(Redis.from_url(settings.redis_url), settings, name="drift-router")
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield settings
    finally:
        stop.set()
        thread.join(10)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_drift_asked_in_slack_is_answered_in_the_thread_and_changes_nothing(
        tmp_path: Path, redis: Redis, worker: Settings, moto: str) -> None:
    reset(moto)
    repo, state = tmp_path / "shop", tmp_path / "state" / "staging.tfstate"
    (repo / "infra").mkdir(parents=True)
    (repo / "web").mkdir()
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    (repo / "infra" / "main.tf").write_text(MAIN_TF.format(state=state))
    with aws_env(moto):
        Infra(repo, state, worker, moto).apply()
    group = _group(moto)
    session(moto).client("ec2", endpoint_url=moto).create_tags(
        Resources=[group["GroupId"]], Tags=[{"Key": "team", "Value": "someone-else"}])

    reply = handle(parse("/orchestra drift staging", ["web"]), ALICE, redis=redis,
                   settings=worker.with_(repos=(str(repo),)))
    assert reply.kind == ReplyKind.STARTED and reply.run is not None, reply.text
    run = RunStore(redis).get(reply.run.id)
    assert (run.kind, run.env, run.channel, run.fence) == ("drift", "staging", "C0INFRA", {})
    assert Locks(redis).holder("web", "staging") is None  # it changes nothing: no deploy lock

    wait_for(lambda: RunStore(redis).get(run.id).status.finished, timeout=90, interval=0.2, what="the drift run")
    assert RunStore(redis).get(run.id).status == RunStatus.FAILED  # drift found: the check did not pass
    events = EventBus(redis).replay(run.id)
    checked = next(e for e in events if e.type == EventType.DRIFT_CHECKED)
    assert [e.data.get("stage") for e in events if e.type == EventType.STAGE_STARTED] == ["drift"]
    line = views.milestone(checked)
    assert line is not None and line.startswith(":x: Drift: staging: drift in 1 resource(s)")
    assert "aws_security_group.web changed outside Terraform (tags, tags_all)" in line
    assert {"Key": "team", "Value": "someone-else"} in _group(moto)["Tags"]  # still drifted: nothing applied
