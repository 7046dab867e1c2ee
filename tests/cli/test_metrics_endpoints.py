"""Each process serves /metrics on loopback: `orchestra webhooks`, `orchestra worker`, `orchestra bot`."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bot.github.handoff import outcome
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.support.fake_github import fake_github
from tests.support.github_payloads import PR_SHA, REPO, SECRET, body_of, headers, load
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import local_slack, orchestra_process, process_env, thread_of

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """GET /metrics over HTTP and parse it as Prometheus would."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def json_log(path: Path) -> list[dict[str, Any]]:
    """The process's log, every line of which must be one JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`orchestra ARGS` with stderr (the log) in ``log``; interrupted like Ctrl-C at the end."""
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=PROJECT_ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def base_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "GITHUB_", "SLACK_"))}
    return {**env, "REDIS_URL": settings.redis_url, "ORCHESTRA_WORKDIR": str(settings.workdir),
            "ORCHESTRA_LOG_FORMAT": "json", **extra}


def test_the_webhook_receiver_serves_metrics_on_its_own_port(redis: Redis, settings: Settings,
                                                              tmp_path: Path) -> None:
    repo = tmp_path / "Codertocat" / "Hello-World"  # served for the owner/name its path ends in
    (repo / "backend").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text(
        "project:\n  name: hello\ndeployment:\n  services:\n    - name: backend\n      path: backend\n")
    port, log = free_port(), tmp_path / "webhooks.log"
    with fake_github() as gh:
        gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
        gh.fail_next("GET", f"/repos/{REPO}/", 429, headers={"Retry-After": "0"})  # the first read is refused
        env = base_env(settings, GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=str(gh.token), GITHUB_API_URL=gh.url,
                       ORCHESTRA_REPOS=str(repo))
        with process(["webhooks", "--port", str(port)], env, log):
            wait_for(lambda: port_open(port), timeout=30, what="orchestra webhooks")
            body, delivery = body_of(load("pull_request.opened.payload.json")), str(uuid.uuid4())
            request = urllib.request.Request(f"http://127.0.0.1:{port}/github/webhook", data=body,
                                             headers=headers("pull_request", body, delivery=delivery))
            urllib.request.urlopen(request, timeout=10).close()
            run_id = str(wait_for(lambda: outcome(redis, delivery), what="the hand-off").run_id)  # type: ignore[attr-defined]
            RunStore(redis).update(run_id, status=RunStatus.SUCCEEDED, reason="all stages passed")
            EventBus(redis).emit(run_id, EventType.RUN_FINISHED, "orchestra", status="succeeded")
            wait_for(lambda: ("orchestra/validate", "success") in gh.status_states(REPO, PR_SHA), what="status")
            wait_for(lambda: _github_calls(scrape(port)) == len(gh.calls), what="every GitHub request counted")
            samples = scrape(port)

    assert value(samples, "orchestra_runs_finished_total", kind="validate", outcome="succeeded") == 1
    assert value(samples, "orchestra_github_api_calls_total", status="429") == 1
    assert value(samples, "orchestra_github_api_calls_total", status="200") >= 1
    assert value(samples, "orchestra_github_api_calls_total", status="201") >= 1  # the comment and the status
    assert ("orchestra_stream_pending", (("group", "github-relay"),)) in samples
    assert value(samples, "orchestra_queue_depth") >= 1  # the run's first stage; no worker in this test
    assert any(delivery in line["message"] for line in json_log(log))  # and every line is JSON


def _github_calls(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "orchestra_github_api_calls_total")


def test_a_worker_whose_port_is_taken_serves_metrics_on_a_free_one_and_says_which(
        redis: Redis, settings: Settings, tmp_path: Path) -> None:
    run_id = RunStore(redis).create(Run(requested_by="U0ALICE", repo="/nowhere")).id
    with socket.socket() as taken:  # something else holds the worker's port (base + 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        base = taken.getsockname()[1] - 1
        log = tmp_path / "worker.log"
        env = base_env(settings, ORCHESTRA_METRICS_PORT=str(base), ORCHESTRA_CACHE_DIR=str(settings.cache))
        with process(["worker", "--no-router"], env, log):
            moved = cast(dict[str, Any], wait_for(lambda: next((line for line in json_log(log)
                                                                if "metrics port" in line["message"]), None),
                                                  timeout=30, what="the worker's metrics port"))
            port = int(re.findall(r"using (\d+) instead", moved["message"])[0])
            EventBus(redis).emit(run_id, EventType.RUN_FINISHED, "orchestra", status="cancelled")
            samples = scrape(port)

    assert port != base + 1
    assert moved["level"] == "WARNING" and moved["logger"] == "orchestra.telemetry"
    assert value(samples, "orchestra_runs_finished_total", kind="deploy", outcome="cancelled") == 1
    assert ("orchestra_queue_depth", ()) in samples and value(samples, "orchestra_redis_up") == 1


def test_the_bot_serves_metrics_on_the_base_port_counting_its_slack_calls(redis: Redis, settings: Settings,
                                                                          tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "bot.log"
    with local_slack() as (running, control):
        env = process_env(settings, running.api_url, ORCHESTRA_METRICS_PORT=str(port), ORCHESTRA_LOG_FORMAT="json")
        with orchestra_process(["bot"], env, log) as proc:
            wait_for(lambda: proc.poll() is None and control.health()["sockets"] >= 1, timeout=30,
                     what="the bot connecting")
            control.fail_next("chat.postMessage", status=429, error="ratelimited", retry_after=1)
            run = RunStore(redis).create(Run(requested_by="U0ALICE", repo="/tmp/shop", services=["frontend"]))
            EventBus(redis).emit(run.id, EventType.RUN_REQUESTED, "U0ALICE")  # the relay opens its thread
            wait_for(lambda: thread_of(control, run.id), timeout=30, what="the run's thread")
            control.command("/orchestra help")  # a listener answers, on the client Bolt makes for the request
            recorded = cast(dict[str, int], wait_for(lambda: _all_counted(scrape(port), control.calls()),
                                                     timeout=30, what="every Web API call the workspace saw, counted"))
            samples = scrape(port)

    calls = "orchestra_slack_api_calls_total"
    assert value(samples, calls, method="chat.postMessage", status="429") == 1
    assert value(samples, calls, method="chat.postMessage", status="200") >= 1
    assert value(samples, calls, method="apps.connections.open", status="200") >= 1
    assert recorded["auth.test"] >= 1  # Bolt's authorization, on the client it made for the request
    assert value(samples, "orchestra_stream_lag", group="relay") == 0
    assert any(line.get("run_id") == run.id for line in json_log(log))  # the relay's rate-limit line


def _all_counted(samples: Samples, calls: list[dict[str, Any]]) -> dict[str, int] | None:
    """The Web API calls per method, when the bot's counts equal what the workspace recorded."""
    recorded = Counter(str(c["method"]) for c in calls if c["method"] != "response_url")  # not a Web API call
    counted = Counter({m: int(sum(v for (name, labels), v in samples.items()
                                  if name == "orchestra_slack_api_calls_total" and ("method", m) in labels))
                       for m in recorded})
    return dict(recorded) if counted == recorded else None
