"""Slack listeners, as conversations in the local workspace with the bot running in-process."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import Redis

from bot.localslack.client import WorkspaceClient
from jobs import approvals
from jobs.workspace import source_dir
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, Run, RunStatus, RunStore
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack, thread_of

SHOP = PROJECT_ROOT / "examples" / "shop"


@pytest.fixture
def slack(settings: Settings) -> Iterator[tuple[WorkspaceClient, Settings]]:
    with local_slack() as (running, control):
        bot_settings = settings.with_(slack_api_url=running.api_url, repos=(str(SHOP),))
        with bot_in_thread(bot_settings, control):
            yield control, bot_settings


def _mine(control: WorkspaceClient, user: str, channel: str = "devops-orchestra") -> list[str]:
    """What only ``user`` sees, in the channel and in its threads, in order."""
    everything = [x for m in control.transcript(channel) for x in (m, *m["replies"])]
    return [m["text"] for m in sorted(everything, key=lambda m: m["ts"]) if m["ephemeral_to"] == user]


def _holds(check: Callable[[], bool], *, seconds: float = 1.0, what: str = "condition") -> None:
    """Fail if ``check`` turns false at any point in the next ``seconds`` (for "nothing more arrives")."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"{what} no longer holds"
        time.sleep(0.05)


def _said(control: WorkspaceClient, text: str, user: str) -> str:
    before = len(_mine(control, user))
    result = control.command(text, user=user)
    assert result["acked"], result
    return str(wait_for(lambda: _mine(control, user)[before:] and _mine(control, user)[-1],
                        what=f"an answer to {text}"))


def test_help_is_shown_only_to_the_asker(slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    answer = _said(control, "/orchestra help", "U0ALICE")
    assert "/deploy &lt;service&gt; [ref] [env]" in answer
    assert all(m["ephemeral_to"] == "U0ALICE" for m in control.transcript())


def test_unknown_service_is_refused_and_recorded(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    answer = _said(control, "/deploy inventory main", "U0ALICE")
    assert answer.startswith("I did nothing: I don't know a service called `inventory`")
    assert "`frontend`" in answer and "`backend`" in answer
    assert RunStore(redis).recent() == []
    refused = [e for e in Audit(redis).entries() if e["action"] == "request_refused"]
    assert refused[-1]["actor"] == "U0ALICE" and "inventory" in refused[-1]["detail"]["reason"]


def test_policy_denial_is_ephemeral_and_audited(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    answer = _said(control, "/deploy frontend main prod", "U0DAVE")
    assert answer.startswith(":no_entry: <@U0DAVE> may not deploy to production")
    assert RunStore(redis).recent() == []
    assert any(e["action"] == "request_denied" and e["actor"] == "U0DAVE" for e in Audit(redis).entries())


def test_deploy_starts_one_run_with_a_thread(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    answer = _said(control, "/deploy frontend hotfix-v2", "U0ALICE")
    runs = RunStore(redis).recent()
    assert len(runs) == 1
    run = runs[0]
    assert answer.startswith(f":rocket: Run `{run.id}` started: deploy of frontend to *staging*")
    assert (run.services, run.ref, run.env, run.requested_by, run.source) == (
        ["backend", "frontend"], "hotfix-v2", "staging", "U0ALICE", "slack")  # backend is not running there
    assert run.origin["slack_channel"] == "C0DEPLOYS"
    parent: Any = wait_for(lambda: thread_of(control, run.id), what="the run's thread")
    assert "Deploy backend, frontend* `hotfix-v2` → *staging*" in parent["text"]


def test_a_retried_mention_is_answered_once(slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    sent = control.say("<@U0ORCHESTRA> what's running in staging?", user="U0BOB", duplicates=2)
    assert sent["attempts"] == 3

    def answers() -> list[dict[str, Any]]:
        return [r for m in control.transcript() if m["ts"] == sent["ts"] for r in m["replies"]]

    wait_for(answers, what="the answer in the thread")
    wait_for(lambda: control.calls("chat.postMessage") and len(control.calls("auth.test")) >= 1, timeout=2)
    assert len(answers()) == 1 and answers()[0]["user"] == "U0ORCHESTRA"


def test_a_dm_in_plain_words(slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    control.say("what commands do you understand?", user="U0CAROL", channel="dm")
    reply: Any = wait_for(lambda: [m for m in control.transcript("D0CAROL") if m["user"] == "U0ORCHESTRA"],
                          what="a DM answer")
    assert "/rollback &lt;service&gt;" in reply[0]["text"]


def test_negation_in_a_mention_starts_nothing(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    control.say("<@U0ORCHESTRA> please don't deploy backend until QA signs off", user="U0ALICE")
    control.say("<@U0ORCHESTRA> help", user="U0ALICE")  # a later message: its answer shows the first was handled
    wait_for(lambda: any("/deploy &lt;service&gt;" in t for t in _mine(control, "U0ALICE")), what="help")
    assert RunStore(redis).recent() == []


def test_acks_while_redis_is_paused(redis_url: str, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    blocker = Redis.from_url(redis_url)
    paused = time.monotonic()  # Redis starts its pause after this, so it lasts until paused + 5 s at least
    blocker.execute_command("CLIENT", "PAUSE", "5000", "ALL")  # every other client waits 5 s
    try:
        result = control.command("/orchestra help", user="U0ALICE")
        acked = time.monotonic() - paused
        wait_for(lambda: _mine(control, "U0ALICE"), what="the answer once Redis is back")
        answered = time.monotonic() - paused
    finally:
        blocker.close()
    # Acked within Slack's 3 s deadline, and before Redis came back: the ack did not wait for Redis.
    assert result["acked"] and result["ack_ms"] < 3000 and acked < 5.0
    assert answered >= 4.9  # the work itself did wait for Redis (less a little for Redis' ms-grained clock)


def _parked_run(redis: Redis, settings: Settings) -> Run:
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(SHOP), services=["frontend"],
                                     env="production", ref="main", commit="3f9c2ab1",
                                     status=RunStatus.AWAITING_APPROVAL, stage="deploy",
                                     origin={"slack_channel": "C0DEPLOYS"}))
    src = source_dir(settings, run)  # the run's checkout, where the approval policy is read
    src.mkdir(parents=True)
    shutil.copy(SHOP / "devops_orchestra.yaml", src / "devops_orchestra.yaml")
    approvals.request(redis, run, "deploy", load_config(src).environment("production"), timeout_s=600)
    return run


def test_approval_buttons_only_work_for_allowed_approvers(redis: Redis,
                                                          slack: tuple[WorkspaceClient, Settings]) -> None:
    control, settings = slack
    run = _parked_run(redis, settings)
    ask: Any = wait_for(lambda: [r for r in (thread_of(control, run.id) or {}).get("replies", [])
                                 if r["buttons"]], what="the approval request")
    ts = ask[0]["ts"]
    for user, why in (("U0ALICE", "you cannot approve your own request"),
                      ("U0CAROL", "may not approve deploys to production")):
        control.click(ts, "Approve", user=user)
        wait_for(lambda u=user, w=why: any(w in t for t in _mine(control, u)), what=f"{user} refused")
    control.click(ts, "Approve", user="U0BOB")
    wait_for(lambda: approvals.get(redis, run.id).decision == "approved", what="the approval")
    wait_for(lambda: not [r for r in thread_of(control, run.id)["replies"]  # type: ignore[index]
                          if r["ts"] == ts and r["buttons"]], what="buttons removed")
    control.click(ts, "Reject", user="U0ALICE", stale=True)  # a late click on an old screen
    control.click(ts, "Approve", user="U0BOB", stale=True)  # a double click
    wait_for(lambda: any("already approved by U0BOB" in t for t in _mine(control, "U0BOB")), what="double")
    wait_for(lambda: any("already approved by U0BOB" in t for t in _mine(control, "U0ALICE")), what="late")
    assert approvals.get(redis, run.id).decided_by == "U0BOB"
    closed: Any = wait_for(lambda: [r for r in thread_of(control, run.id)["replies"]  # type: ignore[index]
                                    if r["ts"] == ts and not r["buttons"]], what="buttons removed")
    assert "Approved by <@U0BOB>" in closed[0]["text"]
    assert [e["actor"] for e in Audit(redis).entries() if e["action"] == "approval_approved"] == ["U0BOB"]


def test_a_retried_deploy_mention_starts_one_run(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    sent = control.say("<@U0ORCHESTRA> deploy backend main to dev", user="U0BOB", duplicates=3)
    assert sent["attempts"] == 4
    runs: Any = wait_for(lambda: RunStore(redis).recent(), what="the run")
    wait_for(lambda: thread_of(control, runs[0].id), what="its thread")

    def answers() -> list[dict[str, Any]]:
        return [r for m in control.transcript() if m["ts"] == sent["ts"] for r in m["replies"]]

    # The handler answers a moment after the relay opens the run's thread: wait for it, then make
    # sure no second answer (or run) follows from the retries.
    first: Any = wait_for(answers, what="the answer to the mention")
    _holds(lambda: len(answers()) == 1 and len(RunStore(redis).recent()) == 1, what="one answer, one run")
    assert first[0]["text"].startswith(f":rocket: Run `{runs[0].id}` started: deploy of backend to *development*")


def test_cancel_from_slack(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    _said(control, "/deploy backend main dev", "U0BOB")
    mine = RunStore(redis).recent()[0]
    prod = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(SHOP), services=["frontend"],
                                      env="production", status=RunStatus.RUNNING))
    denied = _said(control, "/orchestra cancel frontend", "U0DAVE")
    assert denied.startswith(":no_entry: <@U0DAVE> may not deploy to production")
    assert [e["run_id"] for e in Audit(redis).entries() if e["action"] == "cancel_denied"] == [prod.id]
    assert _said(control, "/orchestra cancel", "U0CAROL").startswith(
        "I did nothing: which service or a run id? e.g. `/orchestra cancel backend`")
    done = _said(control, "/orchestra cancel backend", "U0CAROL")
    assert done.startswith(f":octagonal_sign: Cancelling run `{mine.id}` (backend to development)")
    cancels = [e for e in EventBus(redis).replay(mine.id) if e.type == EventType.RUN_CANCELLED]
    assert [e.actor for e in cancels] == ["U0CAROL"]
    assert not [e for e in EventBus(redis).replay(prod.id) if e.type == EventType.RUN_CANCELLED]


def test_a_rate_limited_reply_is_retried(slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    control.fail_next("chat.postEphemeral", status=429, error="ratelimited", retry_after=1)
    control.say("<@U0ORCHESTRA> deploy inventory", user="U0ALICE")
    wait_for(lambda: any("`inventory`" in t for t in _mine(control, "U0ALICE")), what="the refusal, after 1 s")
    assert len(control.calls("chat.postEphemeral")) == 2


def test_cancel_inside_a_runs_thread(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    _said(control, "/deploy backend main dev", "U0ALICE")
    run = RunStore(redis).recent()[0]
    parent: Any = wait_for(lambda: thread_of(control, run.id), what="the run's thread")
    control.say("<@U0ORCHESTRA> cancel this please", user="U0ALICE", thread_ts=parent["ts"])
    wait_for(lambda: [e for e in EventBus(redis).replay(run.id) if e.type == EventType.RUN_CANCELLED],
             what="the cancel event")
    # The relay posts into this thread too; the handler's answer is the one only Alice sees.
    replies: Any = wait_for(lambda: [r for r in thread_of(control, run.id)["replies"]  # type: ignore[index]
                                     if r["ephemeral_to"] == "U0ALICE"], what="the answer in the thread")
    assert replies[0]["text"].startswith(f":octagonal_sign: Cancelling run `{run.id}`")


def test_an_unexpected_failure_gets_a_generic_answer(redis_url: str, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    admin = Redis.from_url(redis_url)
    admin.config_set("requirepass", "locked-out")  # every other client now fails to talk to Redis
    try:
        control.command("/orchestra status", user="U0BOB")
        answer = wait_for(lambda: _mine(control, "U0BOB"), what="an answer")
    finally:
        admin.execute_command("AUTH", "locked-out")
        admin.config_set("requirepass", urlsplit(redis_url).password or "")  # the session's password again
        admin.close()
    assert answer == [":warning: Something went wrong on my side while handling that (it has been logged). "
                      "Please try again."]


def test_the_bot_reconnects_when_slack_refreshes_the_link(slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    before = len(control.calls("apps.connections.open"))
    control.disconnect()
    wait_for(lambda: len(control.calls("apps.connections.open")) > before, what="a new connection")
    wait_for(lambda: control.health()["sockets"] == 1, what="the old link closed, the new one open")
    assert _said(control, "/orchestra help", "U0CAROL").startswith("*DevOps Orchestra*")


def test_shell_characters_arrive_escaped_and_are_refused(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, _ = slack
    control.say("<@U0ORCHESTRA> deploy frontend main&&reboot to dev", user="U0ALICE")
    wait_for(lambda: any("shell characters" in t for t in _mine(control, "U0ALICE")), what="the refusal")
    typed = next(m for m in control.transcript() if m["user"] == "U0ALICE")
    assert typed["text"] == "<@U0ORCHESTRA> deploy frontend main&amp;&amp;reboot to dev"
    assert RunStore(redis).recent() == []
