"""Untrusted text cannot format Slack: `<!channel>`, `<@U…>` and `<url|label>` from tests, commits, PRs,
logs and models read as text; only the markup the bot writes itself (mentions of the people it names,
dates) stays markup. Checked in the view renderers and through the relay into the local Slack workspace.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from slack_sdk import WebClient

from bot.localslack import Running
from bot.localslack.client import WorkspaceClient
from bot.slack import texts, views
from bot.slack.relay import Relay
from handlers.reply import Reply, ReplyKind
from orchestra.events import Event, EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.orchestra.test_redaction import CORPUS, assert_no_secret
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack

SHOP = PROJECT_ROOT / "examples" / "shop"
# What a test name, a commit message, a PR title, a log line or a model might carry.
HOSTILE = ("<!channel> <!here> <!everyone> ping <@U0BOSS> <#C0SECRET> see <http://evil.example/x|the fix> "
           "& <!subteam^S1>")
MARKUP = re.compile(r"<[^<>]*>")  # what Slack would parse as a mention, link or command


def markup(text: str) -> set[str]:
    return set(MARKUP.findall(text))


def all_text(blocks: list[dict[str, Any]] | None) -> str:
    """Every text inside blocks, however deep."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(blocks or [])
    return "\n".join(out)


def _run(**fields: Any) -> Run:
    base: dict[str, Any] = {"requested_by": "U0ALICE", "repo": "/tmp/shop", "services": ["frontend"],
                            "env": "production", "ref": "fix/<!channel>", "origin": {"slack_channel": "C0DEPLOYS"}}
    return Run(**{**base, **fields})


def _event(type: EventType, actor: str = "test", **data: Any) -> Event:
    return Event(run_id="r-20261130-abc123", type=type, actor=actor, data=data)


HOSTILE_DATA = {key: HOSTILE for key in ("summary", "reason", "message", "stage", "risk", "status", "service",
                                         "version", "ref", "from_version", "from_ref", "to_version", "to_ref",
                                         "strategy", "commit")}


@pytest.mark.parametrize("type", [t for t in EventType if t.value in texts.MILESTONES])
def test_every_milestone_escapes_what_the_event_carries(type: EventType) -> None:
    line = views.milestone(_event(type, actor="U0ALICE", **HOSTILE_DATA, reasons=[HOSTILE, HOSTILE]))
    assert line is not None
    assert markup(line) <= {"<@U0ALICE>"}, line  # the bot's own mention of the actor at most
    if "{summary}" in texts.MILESTONES[type.value]:
        assert "&lt;!channel&gt;" in line and "&lt;http://evil.example/x|the fix&gt;" in line


def test_the_parent_message_escapes_ref_reason_and_services_and_keeps_its_mention() -> None:
    run = _run(services=["front<!here>end"], status=RunStatus.FAILED, reason=f"test failed: {HOSTILE}",
               strategy="canary<@U0BOSS>", stage="te<!channel>st")
    text, blocks = views.parent(run)
    assert markup(text) == {"<@U0ALICE>"} and markup(all_text(blocks)) == {"<@U0ALICE>"}
    assert "`fix/&lt;!channel&gt;`" in text


def test_the_approval_request_keeps_its_mentions_and_date_and_escapes_the_rest() -> None:
    run = _run(status=RunStatus.AWAITING_APPROVAL)
    deadline = int(time.time()) + 1800
    text, blocks = views.approval(run, _event(EventType.APPROVAL_REQUESTED, stage=HOSTILE, commit="<!here>abc123",
                                              approvers=["U0BOB", "mallory<!channel>"], deadline=deadline))
    own = {"<@U0ALICE>", "<@U0BOB>", f"<!date^{deadline}^{{time}}|in 29 min>", f"<!date^{deadline}^{{time}}|in 30 min>"}
    assert markup(text) <= own and "<@U0BOB>" in text and f"<!date^{deadline}" in text
    assert "mallory&lt;!channel&gt;" in text
    assert markup(all_text(blocks)) <= own


def test_plan_decision_and_confirmation_escape_their_values() -> None:
    assert markup(views.plan(_run(strategy=HOSTILE), ["analyze", "deploy"])) == set()
    decided_text, decided_blocks = views.decided(_run(), _event(EventType.APPROVAL_GRANTED, actor="U0BOB",
                                                               stage=HOSTILE, decided_by="U0BOB"))
    assert markup(decided_text) == {"<@U0BOB>"} and markup(all_text(decided_blocks)) == {"<@U0BOB>"}
    assert markup(all_text(views.confirm(f"deploy {HOSTILE}", "{}"))) == set()


@pytest.mark.parametrize("kind", [ReplyKind.ANSWER, ReplyKind.NOT_UNDERSTOOD, ReplyKind.PLAN])
def test_handler_replies_are_escaped(kind: ReplyKind) -> None:
    """An explanation carries model prose and crash-log lines; none of it may mention or link."""
    out = texts.render(Reply(kind, text=f"the deploy failed because {HOSTILE}"))
    assert markup(out) == set() and "&lt;!channel&gt;" in out


def test_a_denial_only_the_asker_sees_keeps_user_mentions_and_nothing_else() -> None:
    """The policy names the refused person by mention; an ephemeral mention notifies nobody."""
    denial = f"<@U0DAVE> may not deploy to production {HOSTILE}"
    out = texts.render(Reply(ReplyKind.DENIED, text=denial))
    assert markup(out) == {"<@U0DAVE>", "<@U0BOSS>"}  # user mentions only: never <!channel>, a link or a channel
    assert markup(texts.render(Reply(ReplyKind.DENIED, text=denial, public=True))) == set()
    assert markup(texts.render(Reply(ReplyKind.REFUSED, text="service '<!here>' is not known"))) == set()


def test_started_and_cancelled_replies_escape_services_and_reasons() -> None:
    run = _run(services=["frontend", "<!channel>"])
    started = texts.render(Reply(ReplyKind.STARTED, run=run, data={"added_dependencies": {"<!channel>": HOSTILE}}))
    assert markup(started) == set()
    cancelled = texts.render(Reply(ReplyKind.CANCELLED, run=run, data={"by": "U0ALICE"}))
    assert markup(cancelled) == {"<@U0ALICE>"}
    assert markup(texts.render(Reply(ReplyKind.CANCELLED, run=run, data={"by": "<!channel>"}))) == set()


# --- through the relay into the local Slack workspace ------------------------------------------------------

@pytest.fixture
def slack() -> Iterator[tuple[Running, WorkspaceClient]]:
    with local_slack() as pair:
        yield pair


def test_hostile_text_and_secrets_reach_the_workspace_as_plain_text(redis: Redis, settings: Settings,
                                                                    slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = Relay(redis, settings, WebClient(token="xoxb-local", base_url=running.api_url), name="test",
                  post_interval_s=0.02, update_interval_s=0.05)
    run = RunStore(redis).create(_run(ref="<!here>"))
    bus = EventBus(redis)
    secrets_text = " ".join(c.text for c in CORPUS[:25])
    bus.emit(run.id, EventType.RUN_REQUESTED, "U0ALICE")
    bus.emit(run.id, EventType.TEST_RESULTS, "test", stage="test", passed=False,
             summary=f"1 failed: test_checkout printed {HOSTILE} {secrets_text}")
    bus.emit(run.id, EventType.STAGE_FAILED, "test", stage="test", reason=f"commit says {HOSTILE}")
    RunStore(redis).update(run.id, status=RunStatus.FAILED, reason=f"{HOSTILE} {CORPUS[30].text}")
    bus.emit(run.id, EventType.RUN_FINISHED, "orchestra", status="failed",
             reason=" ".join(c.text for c in CORPUS[25:]), duration_s=3)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        relay.step(block_ms=20)
        thread = (control.transcript("C0DEPLOYS") or [{}])[0]
        if len(thread.get("replies") or []) >= 4 and "failed" in thread.get("text", ""):
            break
    else:
        raise AssertionError(f"the relay did not post the thread: {control.transcript('C0DEPLOYS')}")
    posted = [c["args"] for c in control.calls() if c["method"] in ("chat.postMessage", "chat.update")]
    texts_out = [str(b.get("text", "")) + "\n" + all_text(b.get("blocks")) for b in posted]
    assert texts_out and all(markup(t) <= {"<@U0ALICE>"} for t in texts_out), texts_out
    assert any("&lt;!channel&gt;" in t for t in texts_out)
    assert any("<@U0ALICE>" in t for t in texts_out)  # the bot's own mention of the requester still works
    assert_no_secret(texts_out)


# --- through the bot's listeners: what a person typed comes back as text --------------------------------------

@pytest.fixture
def bot(settings: Settings) -> Iterator[WorkspaceClient]:
    with local_slack() as (running, control):
        with bot_in_thread(settings.with_(slack_api_url=running.api_url, repos=(str(SHOP),)), control):
            yield control


@pytest.mark.parametrize("text", ["/deploy inventory<!channel> main", "/deploy <!here>",
                                  "/orchestra <@U0BOSS> <http://x.example|help>"])
def test_what_a_person_typed_comes_back_without_markup(bot: WorkspaceClient, text: str) -> None:
    bot.command(text, user="U0ALICE")
    answer = wait_for(lambda: [m for m in bot.transcript() if m["ephemeral_to"] == "U0ALICE"], what="the answer")
    said = answer[-1]["text"]  # type: ignore[index]
    assert markup(said) == set(), said
