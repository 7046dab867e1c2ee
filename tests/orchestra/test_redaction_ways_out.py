"""The corpus at every way out: stored events, PR comments and commit statuses, LLM requests over both
protocols, a stage run on a commit whose message and diff carry secrets, and crash-log summaries.

Each way out is attacked on its own where it can be: a run's reason is written to the store unredacted
(only the relay stands between it and GitHub), a prompt variable goes straight to the LLM client, and a
credential with no recognisable shape is held by the process, so only its value can give it away.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.analysis import stage as analyze_agent
from agents.chatops.crashlog import summarize
from bot.github.client import GitHubClient
from bot.github.relay import GitHubRelay
from jobs.graph import ANALYZE
from jobs.runner import execute_stage
from orchestra import redaction
from orchestra.events import RUN_STREAM, EventBus, EventType
from orchestra.llm import LLM, LLMError
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.orchestra.test_redaction import CORPUS, Secret, assert_no_secret
from tests.support.fake_anthropic import fake_anthropic
from tests.support.fake_github import fake_github
from tests.support.fake_openai import fake_openai
from tests.support.files import write_files
from tests.support.sample_apps import git

REPO, SHA = "acme/shop", "3f9c2ab1e4d5c6b7a8990011223344556677889a"


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    redaction.forget_all()
    yield
    redaction.forget_all()


def shapeless(kind: str) -> Secret:
    """A credential only its value can give away: random hex, no prefix any detector knows."""
    value = secrets.token_hex(20)
    return Secret(id=kind, kind=kind, secret=value, text=f"{kind}={value}")


def raw_stream(redis: Redis, key: str) -> str:
    return "\n".join(str(fields) for _, fields in redis.xrange(key))


def test_events_are_stored_without_secrets(redis: Redis) -> None:
    bus = EventBus(redis)
    run_id = "r-20261130-abc123"
    for case in CORPUS:
        bus.emit(run_id, EventType.TEST_RESULTS, "test", stage="test", passed=False, summary=case.text,
                 services={"api": {"failures": [{"test": "test_pay", "message": case.text, "line": 7}]}})
    stored = raw_stream(redis, bus.stream) + raw_stream(redis, RUN_STREAM.format(run_id=run_id))
    assert_no_secret([stored, json.dumps([e.data for e in bus.replay(run_id)])])
    assert stored.count("[REDACTED]") >= 2 * 2 * len(CORPUS)  # both streams, summary and failure message


def test_the_pr_comment_and_commit_status_carry_no_secret(redis: Redis, settings: Settings) -> None:
    webhook = shapeless("GITHUB_WEBHOOK_SECRET")
    held = settings.with_(github_webhook_secret=webhook.secret)
    run = RunStore(redis).create(Run(kind="validate", source="github", requested_by="github:alice", repo=REPO,
                                     commit=SHA, origin={"repo": REPO, "pr": 2, "sha": SHA}))
    bus = EventBus(redis)
    bus.emit(run.id, EventType.CODE_ANALYSIS_RESULT, "analyze", stage="analyze", passed=False, summary="errors",
             findings=[{"file": "app.py", "line": i, "rule": "S105", "severity": "error", "message": c.text}
                       for i, c in enumerate(CORPUS[:20])])
    # The reason goes to the store as the failing stage wrote it: only the relay redacts it on its way out.
    reason = " ".join(c.text for c in CORPUS[20:]) + f" {webhook.text}"
    RunStore(redis).update(run.id, status=RunStatus.FAILED, reason=reason)
    assert webhook.secret in RunStore(redis).get(run.id).reason
    with fake_github() as gh:
        async def refresh() -> None:
            async with GitHubClient(gh.token, base_url=gh.url) as client:
                await GitHubRelay(held, redis=redis, client=client).refresh(run.id)
        asyncio.run(refresh())
        sent = [json.dumps(c.body) for c in gh.calls if c.method in ("POST", "PATCH")]
    assert len(sent) == 2 and "Not safe to merge" in sent[0]  # the comment and the status
    assert_no_secret(sent, [*CORPUS, webhook])


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
def test_llm_requests_carry_no_secret(protocol: str, redis: Redis, settings: Settings) -> None:
    own_key = "model-key-" + secrets.token_hex(16)  # the process's own key, in a shape nobody knows
    diff = "\n".join(f"+{c.text}" for c in CORPUS) + f"\n+LLM_CREDENTIAL_ECHO {own_key}"
    server_cm = fake_anthropic(api_key=own_key) if protocol == "anthropic" else fake_openai(api_key=own_key)
    with server_cm as server:
        llm = LLM(server.client_settings(settings), redis=redis, max_retries=0)
        try:
            llm.text("review_diff", {"files": "app.py", "diff": diff})
        except LLMError:
            pass  # a text answer where a tool was expected is fine: the request is what is checked
        bodies = [json.dumps(r.body if hasattr(r, "body") else r) for r in server.requests]
    assert bodies and "LLM_CREDENTIAL_ECHO" in bodies[0]  # the prompt did go
    assert_no_secret(bodies, [*CORPUS, Secret("own-key", "llm", own_key, own_key)])


def _repo_with_a_leaky_commit(path: Path, payment: str) -> str:
    """A service whose last commit hard-codes secrets and says them in its message."""
    write_files(path, {"app.py": "def total(a, b):\n    return a + b\n", "requirements.txt": "",
                       "devops_orchestra.yaml": "project:\n  name: shop\nsecrets:\n  keys: [PAYMENT_GATEWAY]\n"})
    git(path, "init", "-q", "-b", "main")
    git(path, "add", ".")
    git(path, "commit", "-qm", "the shop")
    lines = "".join(f"LEAK_{i} = {json.dumps(c.text)}\n" for i, c in enumerate(CORPUS[:25]))
    with (path / "app.py").open("a") as source:
        source.write(f"\n{lines}GATEWAY = {payment!r}\n")
    git(path, "add", ".")
    message = "Wire the payment gateway\n\n" + "\n".join(c.text for c in CORPUS[25:]) + f"\ngateway {payment}"
    git(path, "commit", "-qm", message)
    return git(path, "rev-parse", "HEAD")


def test_a_commit_with_secrets_through_the_analysis_stage(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    """The real stage on a real commit: its diff and message reach the model, its findings the stream."""
    payment = shapeless("PAYMENT_GATEWAY")  # no shape: only secrets.keys says it is a secret
    redaction.protect_process(settings, {"PAYMENT_GATEWAY": payment.secret, "HOME": "/root"})
    assert redaction.redact(payment.secret) == payment.secret  # not yet: the project has not named it
    sha = _repo_with_a_leaky_commit(tmp_path / "shop", payment.secret)
    with fake_anthropic() as server:
        run = RunStore(redis).create(Run(kind="validate", source="github", requested_by="github:mallory",
                                         repo=str(tmp_path / "shop"), ref=sha, commit=sha, origin={"pr": 12}))
        execute_stage(run.id, ANALYZE, analyze_agent.run, redis=redis, settings=server.client_settings(settings))
        bodies = [json.dumps(r.body) for r in server.requests]
    events = EventBus(redis).replay(run.id)
    result = next(e.data for e in events if e.type == EventType.CODE_ANALYSIS_RESULT)
    assert bodies, "the review did not reach the model"
    assert any("LEAK_3" in b for b in bodies)  # the diff did go, with its secrets taken out
    assert_no_secret([*bodies, json.dumps(result), raw_stream(redis, EventBus(redis).stream)],
                     [*CORPUS[:25], payment])


def test_a_crash_log_summary_keeps_no_line_of_a_key() -> None:
    key = next(c for c in CORPUS if c.id == "pem-rsa")
    account = next(c for c in CORPUS if c.id == "gcp-service-account-json")
    log: list[Any] = ["Starting api on :8080", key.text, "loaded credentials:", account.text,
                      *[c.text for c in CORPUS if c.kind in ("url-password", "assignment", "jwt", "bearer")],
                      "Traceback (most recent call last):", "KeyError: 'DATABASE_URL'"]
    summary = summarize("\n".join(log), tail=100)
    assert summary.error == "KeyError: 'DATABASE_URL'"
    assert_no_secret([summary.text()])
    assert not any(line.strip().isalnum() and len(line.strip()) >= 40 for line in summary.tail)  # no base64 body


def test_a_key_cut_short_by_a_clipped_log_is_still_redacted() -> None:
    key = next(c for c in CORPUS if c.id == "pem-openssh").secret
    cut = key[: len(key) // 2]
    out = redaction.redact(f"worker: {cut}")
    assert out == "worker: [REDACTED]"


def test_the_commands_fatal_error_is_redacted(tmp_path: Path) -> None:
    """A real `orchestra` process refusing a setting whose value is a token prints the refusal, not the token."""
    token = next(c for c in CORPUS if c.id == "github-fine-grained").secret
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "ORCHESTRA_LLM_PRICE": token}
    done = subprocess.run([sys.executable, "-m", "cli", "parse", "deploy frontend"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "ORCHESTRA_LLM_PRICE=" in done.stderr and "is not a price" in done.stderr
    assert_no_secret([done.stdout, done.stderr], [Secret("token", "github", token, token)])
