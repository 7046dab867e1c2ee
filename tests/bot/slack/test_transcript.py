"""End to end, as a Slack conversation: the real bot process and a real worker, the local workspace.

    alice: /deploy backend demo/lint-error
    orchestra (only alice): :rocket: Run `r-…` started …
    orchestra: ❌ Deploy backend `demo/lint-error` → staging · failed        (the parent, edited in place)
        ↳ ❌ Code analysis: … backend/pricing.py …
        ↳ ❌ Run failed: …

(The full way to a live deploy, with Docker and an approval, is in test_transcript_deploy.py.)
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from bot.localslack.client import WorkspaceClient
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import RunStore
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_process, local_slack, orchestra_process, process_env, thread_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkspaceClient, Redis]]:
    """The demo repository, the local workspace, `orchestra bot` and `orchestra worker`."""
    root = tmp_path_factory.mktemp("transcript")
    repo = root / "shop"
    subprocess.run([str(PROJECT_ROOT / "scripts" / "make-demo-repo"), str(repo)], check=True, capture_output=True)
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    settings = Settings(redis_url=redis_url, workdir=root / "work", repos=(str(repo),))
    with local_slack() as (running, slack):
        env = process_env(settings, running.api_url, ORCHESTRA_CACHE_DIR=str(root / "cache"))
        with bot_process(settings, slack, running.api_url, root / "bot.log"), \
                orchestra_process(["worker"], env, root / "worker.log"):
            yield slack, redis
    redis.close()


def _finished_thread(slack: WorkspaceClient, redis: Redis, answer: str) -> dict[str, Any]:
    run_id = next(r.id for r in RunStore(redis).recent() if r.id in answer)
    return wait_for(lambda: _done(thread_of(slack, run_id)), timeout=120, interval=0.2,
                    what=f"run {run_id} finishing in its thread")  # type: ignore[return-value]


def _done(thread: dict[str, Any] | None) -> dict[str, Any] | None:
    if thread and thread["replies"] and ":rocket:" not in thread["text"] and \
            thread["replies"][-1]["text"].startswith((":white_check_mark: Run", ":x: Run")) and \
            ("succeeded" in thread["text"] or "failed" in thread["text"]):
        return thread
    return None


def _index(replies: list[str], prefix: str) -> int:
    return next(i for i, text in enumerate(replies) if text.startswith(prefix))


def _ephemeral_answer(slack: WorkspaceClient, user: str, after: int) -> str:
    def mine() -> list[str]:
        return [m["text"] for m in slack.transcript("devops-orchestra") if m["ephemeral_to"] == user]
    return str(wait_for(lambda: mine()[after:] and mine()[after], what="the bot's answer"))


def test_a_lint_error_stops_the_run_in_its_thread(world: tuple[WorkspaceClient, Redis]) -> None:
    slack, redis = world
    ack = slack.command("/deploy backend demo/lint-error", user="U0ALICE")
    assert ack["acked"] and ack["ack_ms"] < 3000
    answer = _ephemeral_answer(slack, "U0ALICE", 0)
    assert answer.startswith(":rocket: Run `r-") and "deploy of backend to *staging*" in answer
    thread = _finished_thread(slack, redis, answer)
    assert thread["text"].startswith(":x: *Deploy backend* `demo/lint-error` → *staging* · failed")
    assert thread["edits"] >= 1 and thread["user"] == "U0ORCHESTRA"
    replies = [r["text"] for r in thread["replies"]]
    analysis = _index(replies, ":x: Code analysis:")
    assert "pricing.py" in replies[analysis] or "discounts.py" in replies[analysis], replies
    assert replies[-1].startswith(":x: Run failed") and not any(r.startswith(":white_check_mark: Tests")
                                                               for r in replies)
    assert all(not r["buttons"] for r in thread["replies"])


def test_a_failing_test_is_named_in_the_thread(world: tuple[WorkspaceClient, Redis]) -> None:
    slack, redis = world
    before = len([m for m in slack.transcript("devops-orchestra") if m["ephemeral_to"] == "U0BOB"])
    slack.say("<@U0ORCHESTRA> ship backend demo/failing-test to staging", user="U0BOB")
    started = wait_for(lambda: [r for r in RunStore(redis).recent() if r.ref == "demo/failing-test"],
                       what="the run")
    assert before == 0
    thread = _finished_thread(slack, redis, started[0].id)  # type: ignore[index]
    assert ":x:" in thread["text"] and "failed" in thread["text"]
    failures = [r["text"] for r in thread["replies"] if r["text"].startswith(":x:")]
    assert failures[0].startswith(":x: Tests:") and "test_catalogue_has_four_items" in failures[0]
    mention = next(m for m in slack.transcript("devops-orchestra") if m["user"] == "U0BOB")
    assert any(started[0].id in r["text"] for r in mention["replies"])  # type: ignore[index]
