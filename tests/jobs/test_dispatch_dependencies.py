"""Dependencies are not forgotten: a deploy brings along what its services need that is not running.

Nothing here deploys for real (that needs Docker and is covered by the Docker end-to-end tests):
"running" is the live state the deploy target records, written here the way the target writes it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.deploy.targets.state import LiveState, Release, record_release, set_live
from bot.localslack.client import WorkspaceClient
from bot.slack import texts
from handlers.intake import handle
from handlers.reply import Reply, ReplyKind, Who
from jobs.dispatch import dispatch_run
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.parse import parse
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, RunStore
from tests.support.files import write_files
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack, thread_of

SHOP = PROJECT_ROOT / "examples" / "shop"  # frontend depends_on backend
ALICE = Who("U0ALICE", place="C0DEPLOYS", via="command")
# web needs api, api needs db; production without a freeze window, so only the dependency rule can refuse.
CHAIN = """\
project: {name: chain, language: python, framework: flask}
deployment:
  services:
    - {name: web, path: web, port: 5101, depends_on: [api]}
    - {name: api, path: api, port: 5102, depends_on: [db]}
    - {name: db, path: db, port: 5103}
environments:
  production: {approval_required: true, approvers: [U0BOB], deployers: [U0ALICE]}
"""


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    return write_files(tmp_path / "chain", {"devops_orchestra.yaml": CHAIN, "web/app.py": "", "api/app.py": "",
                                            "db/app.py": ""})


def ask(text: str, redis: Redis, settings: Settings, repo: Path = SHOP) -> Reply:
    """What the requester gets back for ``text`` (every channel goes through the intake)."""
    services = ["frontend", "backend"] if repo == SHOP else ["web", "api", "db"]
    return handle(parse(text, services), ALICE, redis=redis, settings=settings.with_(repos=(str(repo),)))


def running(redis: Redis, service: str, env: str) -> None:
    """Mark ``service`` live in ``env`` with the same two writes the local target makes when it promotes
    a release (``LocalTarget._promote``): the release history and the live state with all traffic on it."""
    release = Release(version="v1", image=f"{service}:v1", port=49000, container=f"{service}-{env}-v1",
                      run_id="r-earlier")
    record_release(redis, service, env, release)
    set_live(redis, LiveState(service=service, env=env, edge_port=49001, edge_prefix=f"/tmp/edge/{service}-{env}",
                              current=release, weights={"v1": 100}, run_id="r-earlier"))


def first_event(redis: Redis, run_id: str) -> dict[str, Any]:
    event = EventBus(redis).replay(run_id)[0]
    assert event.type == EventType.RUN_REQUESTED
    return event.data


def test_a_dependency_that_is_not_running_is_deployed_first_and_the_reply_says_why(
        redis: Redis, settings: Settings) -> None:
    reply = ask("/deploy frontend", redis, settings)
    assert reply.kind == ReplyKind.STARTED and reply.run is not None
    why = "frontend depends on it and it is not running in staging"
    assert RunStore(redis).get(reply.run.id).services == ["backend", "frontend"]
    assert first_event(redis, reply.run.id)["added_dependencies"] == {"backend": why}
    assert texts.render(reply) == (
        f":rocket: Run `{reply.run.id}` started: deploy of frontend to *staging*. Follow it in the thread.\n"
        f"Also deploying backend first: {why}.")


def test_a_running_dependency_is_not_redeployed(redis: Redis, settings: Settings) -> None:
    running(redis, "backend", "staging")
    running(redis, "backend", "production")  # running elsewhere does not count: only where the deploy goes
    reply = ask("/deploy frontend", redis, settings)
    assert reply.run is not None and reply.run.services == ["frontend"]
    assert first_event(redis, reply.run.id)["added_dependencies"] == {}
    assert texts.render(reply).endswith("Follow it in the thread.")


def test_production_refuses_and_names_the_command_unless_the_request_names_the_dependency(
        redis: Redis, settings: Settings, chain: Path) -> None:
    running(redis, "api", "production")  # api runs, db does not: db is what web needs (through api)
    reply = ask("/deploy web prod", redis, settings, chain)
    assert (reply.kind, reply.text) == (ReplyKind.DENIED, (
        "api depends on db, which is not running in production; I don't add services to a production deploy "
        "on my own (deploy it first with `/deploy db prod`, or name it in the same request)"))
    assert RunStore(redis).recent() == []
    assert [e["action"] for e in Audit(redis).entries()] == ["request_denied"]

    named = ask("/deploy web and db prod", redis, settings, chain)
    assert named.kind == ReplyKind.STARTED and named.run is not None
    assert named.run.services == ["db", "web"] and named.data["added_dependencies"] == {}


def test_a_chain_adds_every_missing_link_in_deploy_order(redis: Redis, settings: Settings, chain: Path) -> None:
    reply = ask("/deploy web", redis, settings, chain)
    assert reply.run is not None and reply.run.services == ["db", "api", "web"]
    assert first_event(redis, reply.run.id)["added_dependencies"] == {
        "db": "api depends on it and it is not running in staging",
        "api": "web depends on it and it is not running in staging"}
    assert texts.render(reply).splitlines()[1:] == [
        "Also deploying db first: api depends on it and it is not running in staging.",
        "Also deploying api first: web depends on it and it is not running in staging."]


def test_production_with_several_missing_names_them_all_in_one_command(
        redis: Redis, settings: Settings, chain: Path) -> None:
    reply = ask("/deploy web prod", redis, settings, chain)
    assert reply.kind == ReplyKind.DENIED
    assert reply.text.startswith("api depends on db, which is not running in production; web depends on api, ")
    assert reply.text.endswith("(deploy them first with `/deploy db, api prod`, or name them in the same request)")


def test_rollbacks_and_checks_add_nothing(redis: Redis, settings: Settings, chain: Path) -> None:
    for kind in (IntentKind.ROLLBACK, IntentKind.VALIDATE):
        intent = Intent(kind=kind, service="web", env="staging", user="U0ALICE", source="cli")
        started = dispatch_run(intent, redis=redis, settings=settings, repo=chain)
        assert (started.run.services, started.added_dependencies) == (["web"], {})
        assert first_event(redis, started.run.id)["added_dependencies"] == {}


@pytest.fixture
def slack(settings: Settings) -> Iterator[WorkspaceClient]:
    with local_slack() as (workspace, control):
        with bot_in_thread(settings.with_(slack_api_url=workspace.api_url, repos=(str(SHOP),)), control):
            yield control


def test_in_slack_the_requester_is_told_and_the_thread_shows_both(redis: Redis, slack: WorkspaceClient) -> None:
    """/deploy frontend with nothing running in staging, as the conversation in the local workspace."""
    result = slack.command("/deploy frontend", user="U0ALICE")
    assert result["acked"], result
    answer: Any = wait_for(lambda: [m["text"] for m in slack.transcript("devops-orchestra")
                                    if m["ephemeral_to"] == "U0ALICE"], what="the answer to /deploy frontend")
    run = RunStore(redis).recent()[0]
    assert answer == [f":rocket: Run `{run.id}` started: deploy of frontend to *staging*. Follow it in the "
                      "thread.\nAlso deploying backend first: frontend depends on it and it is not running "
                      "in staging."]
    parent: Any = wait_for(lambda: thread_of(slack, run.id), what="the run's thread")
    assert "Deploy backend, frontend* → *staging*" in parent["text"]
