"""explain: answers built from the event log and the run store of a real Redis."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from redis import Redis

from agents.chatops.answers import Answer, answer
from agents.chatops.crashlog import redact, summarize
from agents.deploy.targets.state import LiveState, Release, record_release, set_live
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.support.fake_anthropic import fake_anthropic


def _deploy(redis: Redis, *, service: str, env: str, version: str, user: str,
            approver: str | None = None, rollback: dict[str, Any] | None = None) -> Run:
    store, bus = RunStore(redis), EventBus(redis)
    run = store.create(Run(requested_by=user, repo="examples/shop", services=[service], env=env,
                           ref=version, strategy="canary"))
    bus.emit(run.id, EventType.RUN_REQUESTED, user, services=[service])
    if approver:
        bus.emit(run.id, EventType.APPROVAL_GRANTED, approver, approver=approver)
    bus.emit(run.id, EventType.DEPLOYMENT_TRIGGERED, "deploy", service=service, version=version)
    if rollback:
        bus.emit(run.id, EventType.ROLLBACK_EVENT, "observe", service=service, env=env, **rollback)
        store.update(run.id, status=RunStatus.FAILED, reason="canary failed: error_rate")
    else:
        bus.emit(run.id, EventType.DEPLOYMENT_SUCCEEDED, "deploy", service=service, version=version, env=env)
        store.update(run.id, status=RunStatus.SUCCEEDED)
    return run


ROLLBACK = {"metric": "error_rate", "value": 0.0612, "threshold": 0.02, "baseline_value": 0.004,
            "window_s": 20.0, "from_version": "v2.1.0", "to_version": "v2.0.9", "step": 1, "weight": 10,
            "automatic": True, "reason": "canary 6.12% vs baseline 0.40%"}


def test_why_did_prod_roll_back_names_metric_numbers_run_and_people(redis: Redis, settings: Settings) -> None:
    _deploy(redis, service="payments", env="production", version="v2.0.9", user="alice", approver="bob")
    run = _deploy(redis, service="payments", env="production", version="v2.1.0", user="carol",
                  approver="dave", rollback=ROLLBACK)
    intent = Intent(kind=IntentKind.EXPLAIN, env="production", text="why did prod roll back?")
    result = answer(intent, redis=redis, settings=settings)
    assert isinstance(result, Answer)
    for needed in (run.id, "error_rate", "6.12%", "2.00%", "v2.1.0", "v2.0.9", "carol", "dave", "UTC"):
        assert needed in result.text, needed
    assert result.facts["rollback"]["metric"] == "error_rate"
    assert result.facts["approved_by"] == "dave"


def test_rollback_question_skips_runs_without_a_rollback(redis: Redis, settings: Settings) -> None:
    old = _deploy(redis, service="backend", env="staging", version="v1", user="alice", rollback=ROLLBACK)
    _deploy(redis, service="backend", env="staging", version="v2", user="erin")
    result = answer(Intent(kind=IntentKind.EXPLAIN, env="staging", text="why did it roll back"),
                    redis=redis, settings=settings)
    assert result.facts["run_id"] == old.id


def test_no_rollback_says_so(redis: Redis, settings: Settings) -> None:
    _deploy(redis, service="backend", env="staging", version="v2", user="erin")
    result = answer(Intent(kind=IntentKind.EXPLAIN, env="production", text="why did prod roll back?"),
                    redis=redis, settings=settings)
    assert result.facts["found"] is False
    assert "no rollback" in result.text and "production" in result.text


def test_what_is_running_in_staging_follows_deploys_and_rollbacks(redis: Redis, settings: Settings) -> None:
    _deploy(redis, service="frontend", env="staging", version="f1", user="alice")
    _deploy(redis, service="backend", env="staging", version="b1", user="alice")
    _deploy(redis, service="backend", env="staging", version="b2", user="bob",
            rollback={**ROLLBACK, "from_version": "b2", "to_version": "b1"})
    _deploy(redis, service="frontend", env="production", version="f0", user="alice")
    result = answer(Intent(kind=IntentKind.STATUS, env="staging", text="what's running in staging?"),
                    redis=redis, settings=settings)
    running = {r["service"]: r["version"] for r in result.facts["running"]}
    assert running == {"frontend": "f1", "backend": "b1"}
    assert "frontend in staging: f1" in result.text and "backend in staging: b1" in result.text
    assert "rollback" in result.text


def test_who_deployed_frontend_last(redis: Redis, settings: Settings) -> None:
    _deploy(redis, service="frontend", env="staging", version="f1", user="alice")
    run = _deploy(redis, service="frontend", env="production", version="f2", user="bob", approver="carol")
    _deploy(redis, service="backend", env="staging", version="b1", user="dave")
    result = answer(Intent(kind=IntentKind.HISTORY, service="frontend", text="who deployed frontend last?"),
                    redis=redis, settings=settings)
    assert result.facts["run_id"] == run.id
    assert "requested by bob, approved by carol" in result.text and "f2" in result.text


class _Writer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.seen: dict[str, Any] | None = None

    def summarize(self, question: str, facts: dict[str, Any], draft: str) -> str | None:
        self.seen = facts
        return self.text


def test_llm_answer_is_used_only_when_it_contains_the_facts(redis: Redis, settings: Settings) -> None:
    run = _deploy(redis, service="payments", env="production", version="v2.1.0", user="carol",
                  rollback=ROLLBACK)
    intent = Intent(kind=IntentKind.EXPLAIN, env="production", text="why did prod roll back?")
    good = _Writer(f"Run {run.id} rolled back v2.1.0: error_rate hit 6.12% (limit 2.00%).")
    assert answer(intent, redis=redis, settings=settings, llm=good).source == "llm"
    vague = _Writer("It rolled back because things looked bad.")
    result = answer(intent, redis=redis, settings=settings, llm=vague)
    assert result.source == "template" and "6.12%" in result.text


def test_reason_with_a_secret_is_redacted(redis: Redis, settings: Settings) -> None:
    store = RunStore(redis)
    run = store.create(Run(requested_by="x", repo="r", services=["api"], env="staging"))
    store.update(run.id, status=RunStatus.FAILED, reason="boot failed: DB_PASSWORD=hunter2 rejected")
    result = answer(Intent(kind=IntentKind.EXPLAIN, service="api", text="what happened"),
                    redis=redis, settings=settings)
    assert "hunter2" not in result.text and "[REDACTED]" in result.text


@pytest.mark.parametrize("secret", ["API_TOKEN=abc123", "password: s3cr3t", "xoxb-1234567890-abcdef",
                                    "sk-ant-api03-abcdefghij", "postgres://app:pw@db:5432/x",
                                    "Authorization: Bearer eyJhbGciOiJI", "AKIAABCDEFGHIJKLMNOP"])
def test_redact_hides_secrets(secret: str) -> None:
    assert secret.split("=")[-1].split(": ")[-1] not in redact(f"boot {secret} done")


def test_crash_summary_finds_the_error_and_keeps_the_tail() -> None:
    log = "\n".join([f"line {i}" for i in range(40)] + [
        "Traceback (most recent call last):", '  File "app.py", line 9, in <module>',
        "RuntimeError: cannot connect with SECRET_KEY=topsecret", "worker exited"])
    summary = summarize(log.encode(), tail=5)
    assert summary.error == "RuntimeError: cannot connect with SECRET_KEY=[REDACTED]"
    assert summary.tail[-1] == "worker exited" and len(summary.tail) == 5
    assert summary.total_lines == 44 and "topsecret" not in summary.text()


def test_with_an_api_key_the_llm_writes_the_answer_from_the_facts(redis: Redis, settings: Settings) -> None:
    run = _deploy(redis, service="payments", env="production", version="v2.1.0", user="carol",
                  approver="dave", rollback=ROLLBACK)
    intent = Intent(kind=IntentKind.EXPLAIN, env="production", text="why did prod roll back?")
    with fake_anthropic() as server:
        keyed = server.client_settings(settings)
        server.reply_text(f"Payments rolled back in run {run.id}: v2.1.0's error_rate reached 6.12% against "
                          "a 2.00% threshold; carol asked, dave approved.")
        result = answer(intent, redis=redis, settings=keyed)
        assert result.source == "llm" and result.text.startswith("Payments rolled back")
        prompt = server.last_user_text()
        assert run.id in prompt and "6.12%" in prompt and "why did prod roll back?" in prompt
        server.reply_text("Payments had a bad day.")  # drops the facts: the template is used
        assert answer(intent, redis=redis, settings=keyed).source == "template"
        server.fail(400)  # an API error: the template, not an exception
        assert answer(intent, redis=redis, settings=keyed).source == "template"


def test_a_run_named_by_id_is_explained(redis: Redis, settings: Settings) -> None:
    run = _deploy(redis, service="frontend", env="staging", version="f1", user="alice")
    _deploy(redis, service="frontend", env="staging", version="f2", user="bob")
    result = answer(Intent(kind=IntentKind.EXPLAIN, text=f"what happened in {run.id}?"),
                    redis=redis, settings=settings)
    assert result.facts["run_id"] == run.id and "alice" in result.text
    missing = answer(Intent(kind=IntentKind.EXPLAIN, text="what happened in r-20990101-abcdef?"),
                     redis=redis, settings=settings)
    assert missing.facts["found"] is False and "r-20990101-abcdef" in missing.text


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "REDIS_URL": redis_url, "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-m", "cli", "explain", *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_gives_the_same_answer(redis: Redis, redis_url: str, settings: Settings) -> None:
    run = _deploy(redis, service="payments", env="production", version="v2.1.0", user="carol",
                  approver="dave", rollback=ROLLBACK)
    intent = Intent(kind=IntentKind.EXPLAIN, env="production", text="why did prod roll back?")
    expected = answer(intent, redis=redis, settings=settings).text
    done = _cli(redis_url, "why did prod roll back?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected and run.id in done.stdout
    flags = _cli(redis_url, "--env", "prod", "--service", "payments", "--json", "why the rollback")
    assert flags.returncode == 0 and '"metric": "error_rate"' in flags.stdout
    status = _cli(redis_url, "what's running in staging?")
    assert status.returncode == 1 and "Nothing is recorded as running" in status.stdout
    bad = _cli(redis_url, "--env", "moon")
    assert bad.returncode == 1 and "unknown environment 'moon'" in bad.stderr


def test_whats_running_prefers_the_targets_live_state(redis: Redis, settings: Settings) -> None:
    run = _deploy(redis, service="backend", env="staging", version="b1", user="alice")
    release = Release(version="b2", image="reg/shop-backend:b2", port=41001, container="c-b2", run_id=run.id)
    old = Release(version="b1", image="reg/shop-backend:b1", port=41000, container="c-b1", run_id=run.id)
    set_live(redis, LiveState(service="backend", env="staging", edge_port=5000, edge_prefix="/tmp/e",
                              current=release, previous=old, weights={"b2": 25, "b1": 75}, run_id=run.id))
    result = answer(Intent(kind=IntentKind.STATUS, env="staging", text="what's running in staging?"),
                    redis=redis, settings=settings)
    (row,) = result.facts["running"]
    assert (row["version"], row["previous"], row["by"]) == ("b2", "b1", "alice")
    assert "backend in staging: b2 [b2 25%, b1 75%]" in result.text and run.id in result.text


def test_status_and_explanations_show_the_sha_with_the_ref_it_was_asked_by(redis: Redis,
                                                                          settings: Settings) -> None:
    store, bus = RunStore(redis), EventBus(redis)
    run = store.create(Run(requested_by="alice", repo="r", services=["backend"], env="staging", ref="hotfix-v2"))
    bus.emit(run.id, EventType.DEPLOYMENT_TRIGGERED, "deploy", service="backend", version="3f9c2ab",
             ref="hotfix-v2", from_version="aaa1111", from_ref="main")
    old = Release(version="aaa1111", ref="main", image="reg/shop-backend:aaa1111", port=41000, container="c-a",
                  run_id="r-older")
    new = Release(version="3f9c2ab", ref="hotfix-v2", image="reg/shop-backend:3f9c2ab", port=41001,
                  container="c-3", run_id=run.id)
    for release in (old, new):
        record_release(redis, "backend", "staging", release)
    set_live(redis, LiveState(service="backend", env="staging", edge_port=5000, edge_prefix="/tmp/e",
                              current=new, previous=old, weights={"3f9c2ab": 100}, run_id=run.id))

    status = answer(Intent(kind=IntentKind.STATUS, env="staging", text="what's running in staging?"),
                    redis=redis, settings=settings).text
    assert "backend in staging: 3f9c2ab (hotfix-v2) since" in status
    history = answer(Intent(kind=IntentKind.HISTORY, service="backend", text="who deployed backend last?"),
                     redis=redis, settings=settings).text
    assert "Versions: backend 3f9c2ab (hotfix-v2)." in history

    bus.emit(run.id, EventType.ROLLBACK_EVENT, "observe", service="backend", env="staging",  # versions only
             **{**ROLLBACK, "from_version": "3f9c2ab", "to_version": "aaa1111"})
    why = answer(Intent(kind=IntentKind.EXPLAIN, env="staging", text="why did staging roll back?"),
                 redis=redis, settings=settings).text
    assert "Traffic went from 3f9c2ab (hotfix-v2) back to aaa1111 (main) at canary step 1" in why


def test_a_crashed_container_log_is_summarised_and_redacted(redis: Redis, settings: Settings) -> None:
    store, bus = RunStore(redis), EventBus(redis)
    run = store.create(Run(requested_by="erin", repo="r", services=["frontend"], env="staging"))
    log = "\n".join(["booting", "loading config", "Traceback (most recent call last):",
                     '  File "/app/app.py", line 7, in <module>',
                     "KeyError: 'DATABASE_URL' (DB_PASSWORD=hunter2)", "worker exited with code 1"])
    bus.emit(run.id, EventType.DEPLOYMENT_FAILED, "deploy", summary="deploy of frontend failed",
             error=f"orchestra-frontend-staging-v2 is not healthy at http://127.0.0.1:5/health: "
                   f"the container exited\n{log}")
    store.update(run.id, status=RunStatus.FAILED)
    result = answer(Intent(kind=IntentKind.EXPLAIN, service="frontend", text="why did the frontend deploy fail?"),
                    redis=redis, settings=settings)
    crash = result.facts["crash"]
    assert crash["error"] == "KeyError: 'DATABASE_URL' (DB_PASSWORD=[REDACTED])"
    assert crash["tail"][-1] == "worker exited with code 1" and len(crash["tail"]) == 5
    assert "the container exited" in result.text and "KeyError: 'DATABASE_URL'" in result.text
    assert "hunter2" not in result.text


def test_a_manual_rollback_says_who_asked(redis: Redis, settings: Settings) -> None:
    store, bus = RunStore(redis), EventBus(redis)
    run = store.create(Run(kind="rollback", requested_by="frank", repo="r", services=["backend"], env="production"))
    bus.emit(run.id, EventType.APPROVAL_GRANTED, "grace", approver="grace")
    bus.emit(run.id, EventType.ROLLBACK_EVENT, "rollback", service="backend", env="production", to_version="b1",
             from_version="b2", changed=True, seconds=1.4, automatic=False)
    text = answer(Intent(kind=IntentKind.EXPLAIN, env="production", text="why did prod roll back?"),
                  redis=redis, settings=settings).text
    assert "asked for by frank, not automatic" in text and "approved by grace" in text
    assert "from b2 back to b1" in text and "Judge" not in text


def test_whats_running_says_where_each_service_runs(redis: Redis, settings: Settings) -> None:
    run = _deploy(redis, service="backend", env="production", version="b1", user="alice")
    for service, runtime, location, address, approximate in (
            ("backend", "kubernetes", "prod-cluster/shop", "http://backend.shop.svc:80", True),
            ("frontend", "docker", None, None, False),
            ("api", "ecs", "shop-prod/api", "http://alb.example.internal", False)):
        release = Release(version="v2", image=f"reg/{service}:v2", port=41001, container=f"c-{service}",
                          run_id=run.id)
        set_live(redis, LiveState(service=service, env="production", edge_port=5000, edge_prefix="",
                                  current=release, weights={"v2": 100}, run_id=run.id, runtime=runtime,
                                  location=location, address=address, approximate=approximate))
    text = answer(Intent(kind=IntentKind.STATUS, env="production", text="what's running in production?"),
                  redis=redis, settings=settings).text
    assert "on Kubernetes prod-cluster/shop at http://backend.shop.svc:80, split by replica ratio (approximate)" in text
    assert "on this host at http://127.0.0.1:5000" in text
    assert "on ECS shop-prod/api at http://alb.example.internal" in text
