"""What each event looks like in a run's thread."""
from __future__ import annotations

from typing import Any

import pytest

from bot.slack.views import approval, milestone, outgoing, parent
from orchestra.events import Event, EventType
from orchestra.store import Run, RunStatus


def _event(type_: EventType, **data: Any) -> Event:
    return Event(run_id="r-20261121-abc123", type=type_, actor="agent", data=data)


@pytest.mark.parametrize("type_,data,line", [
    (EventType.CODE_ANALYSIS_RESULT, {"passed": True, "summary": "no findings"},
     ":white_check_mark: Code analysis: no findings"),
    (EventType.TEST_RESULTS, {"passed": False, "summary": "1 failed"}, ":x: Tests: 1 failed"),
    (EventType.RISK_CLASSIFIED, {"risk": "high", "reasons": ["migrations", "auth"]},
     ":mag: Risk *high*: migrations; auth"),
    (EventType.DEPLOYMENT_TRIGGERED, {"service": "frontend", "version": "5192ac9", "strategy": "canary",
                                      "from_version": "aaa1111"},
     ":ship: Deploying frontend `5192ac9` (canary), replacing `aaa1111`"),
    (EventType.ROLLBACK_EVENT, {"service": "frontend", "from_version": "5192ac9", "to_version": "aaa1111",
                                "reason": "p99 1200 ms above 800 ms"},
     ":leftwards_arrow_with_hook: Rolled back frontend from `5192ac9` to `aaa1111`: p99 1200 ms above 800 ms"),
    (EventType.DEPLOYMENT_TRIGGERED, {"service": "frontend", "version": "3f9c2ab", "ref": "hotfix-v2",
                                      "strategy": "canary", "from_version": "aaa1111", "from_ref": "main"},
     ":ship: Deploying frontend `3f9c2ab` (hotfix-v2) (canary), replacing `aaa1111` (main)"),
    (EventType.ROLLBACK_EVENT, {"service": "frontend", "from_version": "3f9c2ab", "from_ref": "hotfix-v2",
                                "to_version": "src-1a2b3c4", "to_ref": None, "reason": "asked for"},
     ":leftwards_arrow_with_hook: Rolled back frontend from `3f9c2ab` (hotfix-v2) to `src-1a2b3c4`: asked for"),
    (EventType.STAGE_FAILED, {"stage": "build", "reason": "no Dockerfile and no framework found"},
     ":x: `build` failed: no Dockerfile and no framework found"),
    (EventType.RUN_FINISHED, {"status": "succeeded", "reason": "all stages passed", "duration_s": 185},
     ":white_check_mark: Run succeeded: all stages passed (3.1 min)"),
    (EventType.PROGRESS, {"message": "50%"}, None),
    (EventType.STAGE_STARTED, {"stage": "test"}, None),
])
def test_milestones(type_: EventType, data: dict[str, Any], line: str | None) -> None:
    assert milestone(_event(type_, **data)) == line


def test_parent_message_shows_the_run_and_its_outcome() -> None:
    run = Run(id="r-20261121-abc123", requested_by="U0ALICE", repo="/r", services=["frontend"],
              env="production", ref="hotfix-v2", strategy="canary", status=RunStatus.FAILED,
              reason="tests failed")
    text, blocks = parent(run)
    assert text.startswith(":x: *Deploy frontend* `hotfix-v2` → *production* · failed")
    assert "requested by <@U0ALICE> · canary" in text and len(blocks) == 3


def test_approval_buttons_carry_the_run_and_commit() -> None:
    run = Run(id="r-20261121-abc123", requested_by="U0ALICE", repo="/r", services=["frontend"],
              env="production")
    _, blocks = approval(run, _event(EventType.APPROVAL_REQUESTED, stage="deploy", commit="3f9c2ab0",
                                     approvers=["U0BOB"], deadline=0))
    values = {e["action_id"]: e["value"] for e in blocks[1]["elements"]}
    assert values == {"approve": "r-20261121-abc123|3f9c2ab0", "reject": "r-20261121-abc123|3f9c2ab0"}


def test_nothing_secret_or_oversized_leaves_for_slack() -> None:
    token = "xoxb-1234567890-abcdefghij"
    text, blocks = outgoing(f"failed: token {token}", [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"GITHUB_TOKEN=ghp_{'a' * 36}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "x" * 5000}]}])
    assert token not in text and "[REDACTED]" in text
    assert blocks is not None and "ghp_" not in blocks[0]["text"]["text"]
    assert len(blocks[1]["elements"][0]["text"]) <= 1500


def test_not_understood_offers_the_closest_command_when_there_is_one() -> None:
    from bot.slack import texts
    from handlers.reply import Reply, ReplyKind

    assert texts.render(Reply(ReplyKind.NOT_UNDERSTOOD)) == "Sorry, I didn't understand that. Try `/orchestra help`."
    assert texts.render(Reply(ReplyKind.NOT_UNDERSTOOD, "`/deploy frontend`")) == (
        "Sorry, I didn't understand that. Did you mean `/deploy frontend`? Or try `/orchestra help`.")
