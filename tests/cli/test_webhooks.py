"""`orchestra webhooks` as a process: refuses without a secret; serves deliveries and relays results."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from redis import Redis

from bot.github.handoff import outcome
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT
from orchestra.store import RunStatus, RunStore
from tests.support.fake_github import fake_github
from tests.support.github_payloads import PR_SHA, REPO, SECRET, body_of, headers, load
from tests.support.services import free_port, port_open, wait_for

COMMAND = [sys.executable, "-m", "cli", "webhooks"]


def _start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([*COMMAND, "--port", str(port)], cwd=PROJECT_ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_refuses_to_start_without_a_secret() -> None:
    proc = _start({"REDIS_URL": "redis://127.0.0.1:1/0", "GITHUB_WEBHOOK_SECRET": "", "ORCHESTRA_DEV": ""},
                  free_port())
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "GITHUB_WEBHOOK_SECRET is not set" in err


def test_a_pull_request_goes_from_delivery_to_pr_comment(redis_url: str, redis: Redis, tmp_path: Path) -> None:
    repo = tmp_path / "Codertocat" / "Hello-World"  # a folder is served for the owner/name its path ends in
    (repo / "backend").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text(
        "project:\n  name: hello\ndeployment:\n  services:\n    - name: backend\n      path: backend\n")
    port = free_port()
    with fake_github() as gh:
        gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
        proc = _start({"REDIS_URL": redis_url, "GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": str(gh.token),
                       "GITHUB_API_URL": gh.url, "ORCHESTRA_REPOS": str(repo),
                       "ORCHESTRA_WORKDIR": str(tmp_path / "work")}, port)
        try:
            wait_for(lambda: port_open(port), timeout=30, what="orchestra webhooks")
            body, delivery = body_of(load("pull_request.opened.payload.json")), str(uuid.uuid4())
            request = urllib.request.Request(f"http://127.0.0.1:{port}/github/webhook", data=body,
                                             headers=headers("pull_request", body, delivery=delivery))
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 202 and json.loads(resp.read())["result"] == "accepted"
            result = wait_for(lambda: outcome(redis, delivery), what="the hand-off")
            run_id = str(result.run_id)  # type: ignore[attr-defined]
            # what the pipeline would report; the relay in the same process renders it
            RunStore(redis).update(run_id, status=RunStatus.SUCCEEDED, reason="all stages passed")
            EventBus(redis).emit(run_id, EventType.RUN_FINISHED, "orchestra", status="succeeded")
            wait_for(lambda: any("Safe to merge and deploy" in b for b in gh.comment_bodies(REPO, 2)),
                     timeout=15, what="the PR comment")
            wait_for(lambda: ("orchestra/validate", "success") in gh.status_states(REPO, PR_SHA), what="status")
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"listening on http://127.0.0.1:{port}/github/webhook" in out
