"""A failed automatic rollback offers its approvers "Retry rollback to <v>" and "Pin <v>" in Slack.

The bot (Bolt app and relay) runs in-process against the local Slack workspace, with the real Redis.
The alert comes from the real automatic-rollback path, whose rollback asks a Docker engine that is
not there to start the previous release's container (every attempt fails).
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy.targets.state import LiveState, Release, get_live, record_release, set_live
from agents.observability.autorollback import RollbackFacts, auto_rollback
from agents.observability.policy import Policy
from bot.localslack.client import WorkspaceClient
from handlers.reply import Who
from handlers.rollback import PIN, RETRY, from_button
from orchestra.config import load_config
from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.pins import get as pin_of
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, Run, RunStatus, RunStore
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack, thread_of

SHOP = PROJECT_ROOT / "examples" / "shop"  # production: approvers U0ALICE, U0BOB; deployers also U0CAROL


@pytest.fixture
def slack(settings: Settings) -> Iterator[tuple[WorkspaceClient, Settings]]:
    with local_slack() as (running, control):
        bot_settings = settings.with_(slack_api_url=running.api_url, repos=(str(SHOP),))
        with bot_in_thread(bot_settings, control):
            yield control, bot_settings


def _release(redis: Redis, version: str, *, watched: bool) -> Release:
    """A release of backend in production whose deploy run finished (and passed its watch if ``watched``)."""
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(SHOP), services=["backend"], env="production",
                                     status=RunStatus.SUCCEEDED))
    if watched:
        EventBus(redis).emit(run.id, EventType.OBSERVATION_PASSED, "observe", summary="every metric within limits")
    release = Release(version=version, image=f"shop-backend:{version}", port=5001,
                      container=f"shop-backend-production-{version}", run_id=run.id)
    record_release(redis, "backend", "production", release)
    return release


def _failed_rollback(redis: Redis, settings: Settings) -> Run:
    """v1 passed its watch, v2 replaced it, v3 breached its watch and the rollback to v2 failed 3 times."""
    v1, v2, v3 = (_release(redis, v, watched=v == "v1") for v in ("v1", "v2", "v3"))
    set_live(redis, LiveState(service="backend", env="production", edge_port=8080, edge_prefix="", current=v3,
                              previous=v2, weights={"v3": 100}, run_id=v3.run_id))
    run = RunStore(redis).update(v3.run_id, status=RunStatus.RUNNING, stage="observe",
                                 origin={"slack_channel": "C0DEPLOYS"})
    assert run is not None
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=SHOP,
                       config=load_config(SHOP), actor="observe")
    engine = docker.DockerClient(base_url=f"tcp://127.0.0.1:{_closed_port()}", version="1.41", timeout=2)

    def rollback() -> None:  # what the docker target does first: wake the previous colour
        engine.containers.get(v2.container).start()

    facts = RollbackFacts("backend", "production", "v3", "v2", "error_rate stayed above 5.00% for 30s", 30.0,
                          "release", 100)
    assert not auto_rollback(ctx, facts, rollback, Policy(specs=()), sleep=lambda s: None)
    return run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alert(control: WorkspaceClient, run: Run) -> dict[str, Any]:
    rows: Any = wait_for(lambda: [r for r in (thread_of(control, run.id) or {}).get("replies", []) if r["buttons"]],
                         what="the alert with its buttons")
    return dict(rows[0])


def _mine(control: WorkspaceClient, user: str) -> list[str]:
    everything = [x for m in control.transcript("devops-orchestra") for x in (m, *m["replies"])]
    return [m["text"] for m in sorted(everything, key=lambda m: m["ts"]) if m["ephemeral_to"] == user]


def _rollbacks(redis: Redis) -> list[Run]:
    return [r for r in RunStore(redis).recent(50) if r.kind == "rollback"]


def test_the_alert_offers_the_previous_and_the_last_watched_version(redis: Redis,
                                                                    slack: tuple[WorkspaceClient, Settings]) -> None:
    control, settings = slack
    run = _failed_rollback(redis, settings)
    alert = _alert(control, run)
    assert "ROLLBACK FAILED" in alert["text"] and "Only the approvers of production" in alert["text"]
    assert [b["text"] for b in alert["buttons"]] == ["Retry rollback to v2", "Pin v2", "Retry rollback to v1",
                                                     "Pin v1"]
    assert {b["value"] for b in alert["buttons"]} == {f"{run.id}|backend|production|v2",
                                                      f"{run.id}|backend|production|v1"}
    assert any(r["reply_broadcast"] and r["buttons"] for r in control.transcript("devops-orchestra"))


def test_only_an_approver_retries_and_a_double_click_starts_one_run(redis: Redis,
                                                                   slack: tuple[WorkspaceClient, Settings]) -> None:
    control, settings = slack
    run = _failed_rollback(redis, settings)
    ts = _alert(control, run)["ts"]
    control.click(ts, "Retry rollback to v2", user="U0CAROL")  # a deployer, not an approver
    refusal: Any = wait_for(lambda: _mine(control, "U0CAROL"), what="Carol's refusal")
    assert "<@U0CAROL> may not retry or pin a rollback in production" in refusal[0]
    assert "<@U0ALICE>, <@U0BOB>" in refusal[0]
    assert _rollbacks(redis) == []
    assert [e["actor"] for e in Audit(redis).entries() if e["action"] == "rollback_button_refused"] == ["U0CAROL"]

    clicks = [threading.Thread(target=control.click, args=(ts, label), kwargs={"user": user})
              for label, user in (("Retry rollback to v2", "U0BOB"), ("Retry rollback to v2", "U0BOB"),
                                  ("Pin v1", "U0ALICE"))]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join()
    wait_for(lambda: _rollbacks(redis), what="the rollback run")
    wait_for(lambda: len(_mine(control, "U0BOB") + _mine(control, "U0ALICE")) >= 2, what="the other clicks answered")
    [rollback] = _rollbacks(redis)  # three clicks, two of them on the other button: one run
    winner = (rollback.requested_by, rollback.origin["to_version"])
    assert winner in {("U0BOB", "v2"), ("U0ALICE", "v1")} and rollback.env == "production"
    assert (pin_of(redis, "backend", "production") is not None) == (winner == ("U0ALICE", "v1"))
    answers = _mine(control, "U0BOB") + _mine(control, "U0ALICE")
    assert len(answers) == 2 and all("already answered this alert" in a or "being handled right now" in a
                                     for a in answers), answers  # the winner's answer is in the thread
    wait_for(lambda: [r for r in thread_of(control, run.id)["replies"]  # type: ignore[index]
                      if f"Run `{rollback.id}` started: rollback of backend" in r["text"]],
             what="the winner's run, told in the thread")


def test_pin_refuses_deploys_until_an_approver_unpins(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, settings = slack
    run = _failed_rollback(redis, settings)
    control.click(_alert(control, run)["ts"], "Pin v1", user="U0ALICE")
    started: Any = wait_for(lambda: _rollbacks(redis), what="the pin's rollback run")
    [rollback] = started
    assert (rollback.origin["to_version"], rollback.requested_by) == ("v1", "U0ALICE")
    pinned = pin_of(redis, "backend", "production")
    assert pinned is not None and (pinned.version, pinned.by, pinned.run_id) == ("v1", "U0ALICE", run.id)

    denied = _said(control, "/deploy backend main prod", "U0BOB")
    assert denied.startswith(":no_entry: backend in production is pinned to v1 by <@U0ALICE> at ")
    assert "`/orchestra unpin backend production` to release" in denied
    other = _said(control, "/rollback backend v2 prod", "U0BOB")  # another version is refused too
    assert "pinned to v1" in other
    assert len(RunStore(redis).recent(50)) == 4  # three releases' runs and the pin's rollback: nothing new
    assert [e["detail"]["reason"][:40] for e in Audit(redis).entries() if e["action"] == "request_denied"] == \
        ["backend in production is pinned to v1 by"] * 2

    same = _said(control, "/rollback backend v1 prod", "U0BOB")  # to the pinned version: allowed (it queues)
    assert same.startswith(":rocket: Run `") and "pinned" not in same
    refused = _said(control, "/orchestra unpin backend production", "U0CAROL")
    assert "only its approvers can (<@U0ALICE>, <@U0BOB>)" in refused
    assert pin_of(redis, "backend", "production") is not None
    assert control.command("/orchestra unpin backend production", user="U0BOB")["acked"]
    released: Any = wait_for(lambda: [m for m in control.transcript("devops-orchestra") if m["ephemeral_to"] is None
                                      and "released the pin" in m["text"]], what="the release, told to the channel")
    assert released[0]["text"].startswith("U0BOB released the pin of backend in production (it was on v1)")
    assert pin_of(redis, "backend", "production") is None
    assert [e["action"] for e in Audit(redis).entries() if "pin" in e["action"]] == \
        ["version_pinned", "unpin_denied", "version_unpinned"]
    again = _said(control, "/deploy backend main prod", "U0BOB")
    assert "pinned" not in again and again.startswith(":rocket: Run `")


def test_a_stale_click_answers_what_is_true_now(redis: Redis, slack: tuple[WorkspaceClient, Settings]) -> None:
    control, settings = slack
    run = _failed_rollback(redis, settings)
    ts = _alert(control, run)["ts"]
    _said(control, "/rollback backend v2 prod", "U0ALICE")  # someone rolled back by hand: that run holds the lock
    [by_hand] = _rollbacks(redis)
    control.click(ts, "Retry rollback to v1", user="U0BOB")
    busy: Any = wait_for(lambda: _mine(control, "U0BOB"), what="Bob's answer")
    assert f"run {by_hand.id} (rollback asked by U0ALICE, " in busy[-1], busy
    assert "is already working on backend in production; nothing was started" in busy[-1]
    assert _rollbacks(redis) == [by_hand]

    live = get_live(redis, "backend", "production")
    assert live is not None and live.previous is not None  # the hand rollback went through, as the target records it
    set_live(redis, live.model_copy(update={"current": live.previous, "previous": live.current,
                                            "last_action": "rollback", "run_id": by_hand.id}))
    control.click(ts, "Retry rollback to v2", user="U0BOB")
    already: Any = wait_for(lambda: len(_mine(control, "U0BOB")) > 1 and _mine(control, "U0BOB"), what="answer")
    assert "backend in production is already on v2" in already[-1]
    assert _rollbacks(redis) == [by_hand]


def test_forged_button_values_are_refused(redis: Redis, settings: Settings) -> None:
    settings = settings.with_(repos=(str(SHOP),))
    run = _failed_rollback(redis, settings)
    _release(redis, "v0", watched=False)  # deployed once, never passed a watch: not safe to put back
    bob = Who("U0BOB", place="C0DEPLOYS", via="button")
    for value, why in ((f"{run.id}|frontend|production|v2", "not frontend in production"),
                       (f"{run.id}|backend|staging|v2", "not backend in staging"),
                       (f"{run.id}|backend|production|v0", "v0 is not a version backend in production can safely"),
                       (f"{run.id}|backend|production|v2|x", "is not one I made"),
                       ("r-20261130-zzzzzz|backend|production|v2", "is not one I made"),
                       (f"{run.id}|backend|production|--force", "is not one I made")):
        with pytest.raises(OrchestraError, match=why):
            from_button(RETRY, value, bob, redis=redis, settings=settings)
    with pytest.raises(OrchestraError, match="v0 is not a version"):
        from_button(PIN, f"{run.id}|backend|production|v0", bob, redis=redis, settings=settings)
    assert _rollbacks(redis) == [] and pin_of(redis, "backend", "production") is None
    from_button(RETRY, f"{run.id}|backend|production|v1", bob, redis=redis, settings=settings)  # refusals left no claim
    assert [r.origin["to_version"] for r in _rollbacks(redis)] == ["v1"]


def _said(control: WorkspaceClient, text: str, user: str) -> str:
    before = len(_mine(control, user))
    assert control.command(text, user=user)["acked"]
    return str(wait_for(lambda: _mine(control, user)[before:] and _mine(control, user)[-1],
                        what=f"an answer to {text}"))
