"""Block Kit views: a run's parent message, its approval request, thread replies, confirmations.

Every value that did not come from the bot itself (services, refs, reasons, test output, commit and PR
text, model output) goes into mrkdwn through ``texts.escape``; the templates and ``who`` are the bot's
own markup. ``outgoing`` then redacts secrets from everything, the last step before Slack.
"""
from __future__ import annotations

import time
from typing import Any

from bot.slack import texts
from bot.slack.texts import escape
from handlers.reply import Reply, ReplyKind
from handlers.rollback import button_value as rollback_button_value
from orchestra.events import Event
from orchestra.redaction import redact
from orchestra.store import Run

APPROVE = "approve"
REJECT = "reject"
CONFIRM_YES = "confirm_intent"
CONFIRM_NO = "drop_intent"
ROLLBACK_RETRY = "rollback_retry"  # with ":<n>" for the n-th version offered (action ids are unique per message)
ROLLBACK_PIN = "rollback_pin"


MAX_TEXT = 3000  # Slack's limit for a section's text; messages stay readable too
MAX_CONTEXT = 1500


def outgoing(text: str, blocks: list[dict[str, Any]] | None = None) -> tuple[str, list[dict[str, Any]] | None]:
    """What may leave for Slack: secrets redacted, texts clipped to Slack's limits."""
    return _clip(redact(text), MAX_TEXT * 3), [_clean_block(b) for b in blocks] if blocks else None


def _clean_block(block: dict[str, Any], limit: int = MAX_TEXT) -> dict[str, Any]:
    limit = MAX_CONTEXT if block.get("type") == "context" else limit
    out = dict(block)
    text = out.get("text")
    if isinstance(text, dict) and "text" in text:
        out["text"] = {**text, "text": _clip(redact(str(text["text"])), limit)}
    elif isinstance(text, str):  # a context element: {"type": "mrkdwn", "text": "..."}
        out["text"] = _clip(redact(text), limit)
    if isinstance(out.get("elements"), list):
        out["elements"] = [_clean_block(e, limit) if isinstance(e, dict) else e for e in out["elements"]]
    return out


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reply(answer: Reply) -> tuple[str, list[dict[str, Any]]]:
    """A handler's reply as Slack text and blocks (a confirmation gets its Yes/No buttons)."""
    text = texts.render(answer)
    if answer.kind == ReplyKind.CONFIRM:
        return text, confirm(answer.data["summary"], answer.data["payload"])
    return text, []


def who(user: str | None) -> str:
    """A Slack mention for user ids, the (escaped) name otherwise."""
    return texts.mention(user)


def parent(run: Run) -> tuple[str, list[dict[str, Any]]]:
    """The run's one parent message: title line, meta line, and the reason once finished."""
    status = run.status.value
    title = texts.PARENT.format(
        icon=texts.STATUS_ICON.get(status, ""), verb=texts.KIND_VERB.get(run.kind, run.kind.title()),
        services=escape(", ".join(run.services) or "all services"), ref=f" `{escape(run.ref)}`" if run.ref else "",
        env=escape(run.env), status=texts.STATUS_WORD.get(status, status))
    meta = texts.PARENT_META.format(
        run_id=escape(run.id), requester=who(run.requested_by),
        strategy=f" · {escape(run.strategy)}" if run.strategy else "",
        stage=f" · stage `{escape(run.stage)}`" if run.stage and not run.status.finished else "")
    blocks: list[dict[str, Any]] = [_section(title), _context(meta)]
    if run.status.finished and run.reason:
        blocks.append(_context(texts.PARENT_REASON.format(reason=escape(run.reason))))
    return f"{title}\n{meta}", blocks


def approval(run: Run, event: Event) -> tuple[str, list[dict[str, Any]]]:
    """The approval request with its Approve / Reject buttons (value: run id and commit)."""
    data = event.data
    deadline = int(data.get("deadline") or time.time())
    text = texts.APPROVAL_ASK.format(
        stage=escape(data.get("stage", "deploy")), services=escape(", ".join(run.services)), env=escape(run.env),
        commit=f" (commit `{escape(str(data['commit'])[:7])}`)" if data.get("commit") else "",
        requester=who(data.get("requester") or run.requested_by),
        approvers=", ".join(who(a) for a in data.get("approvers") or []) or "anyone allowed",
        deadline=deadline, left=_left(deadline)) + (f"\n{escape(data['message'])}" if data.get("message") else "")
    value = f"{run.id}|{data.get('commit') or ''}"
    buttons = {"type": "actions", "block_id": f"approval:{run.id}", "elements": [
        _button("Approve", APPROVE, value, "primary"), _button("Reject", REJECT, value, "danger")]}
    return text, [_section(text), buttons]


def rollback_failed(run: Run, event: Event, versions: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The loud alert of a failed rollback, with "Retry rollback to <v>" and "Pin <v>" for each version that
    is safe to put back (values: run id, service, env, version; the handler reads everything again)."""
    text = milestone(event) or ""
    data = event.data
    service, env = str(data.get("service") or ""), str(data.get("env") or run.env)
    if not versions or not service:
        return text, [_section(text)]
    elements = []
    for n, version in enumerate(versions):
        value = rollback_button_value(run.id, service, env, version)
        label = _clip(version, 40)  # a button's label holds 75 characters
        elements += [_button(texts.RETRY_BUTTON.format(version=label), f"{ROLLBACK_RETRY}:{n}", value, "danger"),
                     _button(texts.PIN_BUTTON.format(version=label), f"{ROLLBACK_PIN}:{n}", value)]
    ask = texts.ROLLBACK_BUTTONS_ASK.format(approvers="the approvers of " + escape(env))
    return f"{text}\n{ask}", [_section(text), _context(ask),
                              {"type": "actions", "block_id": f"rollback:{run.id}", "elements": elements}]


def decision_line(event: Event) -> str:
    """"Approved by @bob." and the like."""
    return texts.APPROVAL_DONE[event.type.value].format(who=who(event.data.get("decided_by") or event.actor))


def decided(run: Run, event: Event) -> tuple[str, list[dict[str, Any]]]:
    """The approval message once decided: the buttons are gone, who decided is shown."""
    head = texts.APPROVAL_CLOSED.format(stage=escape(event.data.get("stage", "deploy")),
                                        services=escape(", ".join(run.services)), env=escape(run.env))
    line = decision_line(event)
    return f"{head}\n{line}", [_section(head), _context(line)]


def plan(run: Run, stages: list[str]) -> str:
    """The thread's first reply: what the run will do, in order."""
    return texts.PLAN.format(stages=" → ".join(f"`{escape(s)}`" for s in stages) or "nothing",
                             strategy=f" ({escape(run.strategy)})" if run.strategy and "deploy" in stages else "")


def milestone(event: Event) -> str | None:
    """The thread reply for an event, or None when it only updates the parent message."""
    template = texts.MILESTONES.get(event.type.value)
    if template is None:
        return None
    data = event.data
    passed = data.get("passed")
    reasons = data.get("reasons") or []
    return template.format(
        summary=escape(data.get("summary") or data.get("message") or data.get("reason") or event.type.value),
        reason=escape(data.get("reason") or data.get("summary") or "no reason given"),
        stage=escape(data.get("stage") or event.actor), actor=who(event.actor),
        pass_icon=texts.PASS_ICON.get(passed if isinstance(passed, bool) else None),
        risk=escape(data.get("risk") or data.get("level") or "unknown"),
        reasons=escape(": " + "; ".join(map(str, reasons))) if reasons else "",
        status=escape(data.get("status", "finished")),
        status_icon=texts.STATUS_ICON.get(str(data.get("status")), ""),
        duration=_duration(data.get("duration_s")), **_release(data))


def _release(data: dict[str, Any]) -> dict[str, str]:
    """Which service, version and strategy a deploy or rollback event is about, as phrase pieces."""
    old = _version(data.get("from_version"), data.get("from_ref"))
    new = _version(data.get("to_version"), data.get("to_ref"))
    version = _version(data.get("version"), data.get("ref"))
    return {"service": escape(data.get("service") or "the service"),
            "version": f" {version}" if version else "",
            "strategy": f" ({escape(data['strategy'])})" if data.get("strategy") else "",
            "from_version": f", replacing {old}" if old else "",
            "rolled": f" from {old} to {new}" if old and new else (f" to {new}" if new else "")}


def _version(version: object, ref: object) -> str:
    """"`3f9c2ab` (hotfix-v2)": the version as code, the ref it was asked by beside it ("" for none)."""
    if not version:
        return ""
    return f"`{escape(version)}` ({escape(ref)})" if ref else f"`{escape(version)}`"


def confirm(summary: str, payload: str) -> list[dict[str, Any]]:
    """Yes / No buttons for an action the language model (not the rules) understood."""
    return [_section(texts.CONFIRM.format(summary=escape(summary))),
            {"type": "actions", "block_id": "confirm", "elements": [
                _button("Yes, do it", CONFIRM_YES, payload, "primary"), _button("No", CONFIRM_NO, payload)]}]


def _button(label: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": label},
                              "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    return button


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _left(deadline: int) -> str:
    minutes = max(0, deadline - int(time.time())) // 60
    return f"{minutes} min"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f} min"
