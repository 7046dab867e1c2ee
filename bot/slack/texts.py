"""Every sentence the bot says in Slack, in one place."""
from __future__ import annotations

import re

from handlers.reply import Reply, ReplyKind
from orchestra.store import Run

# `<service>` is written escaped: Slack would read <...> as a link, even between backticks.
HELP = (
    "*DevOps Orchestra* — what I understand:\n"
    "• `/deploy &lt;service&gt; [ref] [env] [--strategy blue-green|canary|rolling]` — e.g. "
    "`/deploy frontend hotfix-v2 prod`\n"
    "• `/rollback &lt;service&gt; [env] [ref]`\n"
    "• `/orchestra status [service] [env]` · `/orchestra history [service] [env]`\n"
    "• `/orchestra explain why did prod roll back?` · `/orchestra cancel &lt;service | run id&gt;`\n"
    "• `/orchestra unpin &lt;service&gt; &lt;env&gt;` — release a version pinned after a failed rollback (approvers)\n"
    "• `/orchestra flaky &lt;service&gt;` — its tests that failed and then passed alone, with their failure rate\n"
    "• `/orchestra drift &lt;env&gt;` — what changed in the environment's infrastructure outside Terraform "
    "(a plan against live state; nothing is applied)\n"
    "• Or mention me / DM me in plain words: _ship frontend hotfix-v2 to prod_, _what's running in "
    "staging?_, _who deployed payments last?_\n"
    "Environments: production (prod), staging (stg), development (dev). Default environment: staging."
)
NOT_UNDERSTOOD = "Sorry, I didn't understand that. Try `/orchestra help`."
NOT_UNDERSTOOD_CLOSE = "Sorry, I didn't understand that. Did you mean {suggestion}? Or try `/orchestra help`."
REFUSED = "I did nothing: {message}"
DENIED = ":no_entry: {message}"
FAILED = ":warning: Something went wrong on my side while handling that (it has been logged). Please try again."
STARTED = ":rocket: Run `{run_id}` started: {kind} of {services} to *{env}*. Follow it in the thread."
QUEUED = ":lock: Queued: {why}."
DRIFT_STARTED = (":mag: Run `{run_id}` started: looking for drift in *{env}* (a plan against its live infrastructure; "
                 "nothing is applied). The answer comes in the thread.")
ALSO_DEPLOYING = "Also deploying {service} first: {reason}."
CANCEL_DONE = ":octagonal_sign: Cancelling run `{run_id}` ({services} to {env}) as {user} asked."
CONFIRM = "Did you mean: *{summary}*?"
# The buttons of a failed rollback (views.rollback_failed); labels are plain text, at most 75 characters.
RETRY_BUTTON = "Retry rollback to {version}"
PIN_BUTTON = "Pin {version}"
ROLLBACK_BUTTONS_ASK = "Only {approvers} can use these buttons; one click answers this alert."
CONFIRM_DROPPED = "OK, I did nothing."
RUN_LINE = "`{run_id}` {kind} to {env}: {status}"
NO_RUNS = "No runs yet."
APPROVAL_NOT_ACCEPTED = ":raised_hand: {message}"

FIXED = {ReplyKind.HELP: HELP, ReplyKind.NOT_UNDERSTOOD: NOT_UNDERSTOOD, ReplyKind.FAILED: FAILED,
         ReplyKind.DROPPED: CONFIRM_DROPPED}

# Relay: the parent message and thread replies of a run.
KIND_VERB = {"deploy": "Deploy", "rollback": "Rollback", "validate": "Checks", "drift": "Drift check",
             "plan": "Terraform plan"}
STATUS_ICON = {"queued": ":hourglass_flowing_sand:", "running": ":arrows_counterclockwise:",
               "awaiting_approval": ":raised_hand:", "succeeded": ":white_check_mark:",
               "failed": ":x:", "rejected": ":no_entry_sign:", "cancelled": ":octagonal_sign:"}
STATUS_WORD = {"queued": "queued", "running": "running", "awaiting_approval": "waiting for approval",
               "succeeded": "succeeded", "failed": "failed", "rejected": "rejected", "cancelled": "cancelled"}
PARENT = "{icon} *{verb} {services}*{ref} → *{env}* · {status}"
PARENT_META = "Run `{run_id}` · requested by {requester}{strategy}{stage}"
PARENT_REASON = "Reason: {reason}"
APPROVAL_ASK = (":raised_hand: *Approval needed* before `{stage}` of {services} to *{env}*{commit}. "
                "Requested by {requester}. Approvers: {approvers}. Expires <!date^{deadline}^{{time}}|in {left}>.")
APPROVAL_CLOSED = ":raised_hand: Approval for `{stage}` of {services} to *{env}*"
APPROVAL_DONE = {"approval_granted": ":white_check_mark: Approved by {who}.",
                 "approval_rejected": ":no_entry_sign: Rejected by {who}.",
                 "approval_expired": ":hourglass: The approval request expired; nothing was deployed."}
PLAN = ":clipboard: Plan: {stages}{strategy}. Each step reports here."
MILESTONES = {
    "risk_classified": ":mag: Risk *{risk}*{reasons}",
    "route_decided": ":twisted_rightwards_arrows: Path: {summary}",
    "code_analysis_result": "{pass_icon} Code analysis: {summary}",
    "test_results": "{pass_icon} Tests: {summary}",
    "build_ready": "{pass_icon} Build: {summary}",
    "iac_ready": "{pass_icon} Infrastructure: {summary}",
    "drift_checked": "{pass_icon} Drift: {summary}",
    "migrations_found": ":card_file_box: Migrations in this change: {summary}",
    "migrations_applied": "{pass_icon} Migrations: {summary}",
    "deployment_triggered": ":ship: Deploying {service}{version}{strategy}{from_version}",
    "deployment_succeeded": ":white_check_mark: Deployed: {summary}",
    "deployment_failed": ":x: Deployment failed: {summary}",
    "stage_failed": ":x: `{stage}` failed: {reason}",
    "observability_alert": ":rotating_light: Alert: {summary}",
    "rollback_event": ":leftwards_arrow_with_hook: Rolled back {service}{rolled}: {reason}",
    "lock_waiting": ":lock: Waiting for the deploy lock: {summary}",
    "lock_granted": ":unlock: Your turn: {summary}",
    "policy_denied": ":no_entry: {summary}",
    "run_cancelled": ":octagonal_sign: Cancelled by {actor}.",
    "run_finished": "{status_icon} Run {status}: {reason} ({duration})",
}
PASS_ICON = {True: ":white_check_mark:", False: ":x:", None: ":information_source:"}


# A user mention (never <!channel>, <!here> or a link) escaped by `escape`, given back to refusals and denials
# that only the asker sees (ephemeral: a mention there notifies nobody): the policy writes `<@U…>` for the
# person it refuses. A public refusal keeps every mention escaped.
_USER_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,20})&gt;")


def escape(text: object) -> str:
    """Untrusted text for mrkdwn: Slack's own escaping (& < >), so `<!channel>`, `<@U1>` and `<url|label>`
    read as text. Only what the bot writes itself (the templates above, :func:`mention`) stays markup."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user: str | None) -> str:
    """A Slack mention for a user id (the bot's own markup), the escaped name otherwise."""
    if user and user[:1] in "UW" and user.isalnum():
        return f"<@{user}>"
    return escape(user or "someone")


def render(reply: Reply) -> str:
    """The words of a handler's reply, in Slack's mrkdwn; every value from the handler is escaped."""
    run = reply.run
    if reply.kind == ReplyKind.STARTED and run is not None:
        return _started(reply, run)
    if reply.kind == ReplyKind.CANCELLED and run is not None:
        return CANCEL_DONE.format(run_id=escape(run.id), services=escape(", ".join(run.services)),
                                  env=escape(run.env), user=mention(reply.data.get("by")))
    if reply.kind == ReplyKind.CONFIRM:
        return CONFIRM.format(summary=escape(reply.data.get("summary", "")))
    if reply.kind == ReplyKind.RUNS:
        return "\n".join(RUN_LINE.format(run_id=escape(r.id), kind=escape(r.kind), env=escape(r.env),
                                         status=escape(r.status.value)) for r in reply.runs) or NO_RUNS
    if reply.kind == ReplyKind.NOT_UNDERSTOOD and reply.text:
        return NOT_UNDERSTOOD_CLOSE.format(suggestion=escape(reply.text))
    if reply.kind in FIXED:
        return FIXED[reply.kind]
    if reply.kind in (ReplyKind.REFUSED, ReplyKind.DENIED):
        message = escape(reply.text)
        if not reply.public:  # the policy names the person it refuses by mention; only they see it
            message = _USER_MENTION.sub(r"<@\1>", message)
        return {ReplyKind.REFUSED: REFUSED, ReplyKind.DENIED: DENIED}[reply.kind].format(message=message)
    return escape(reply.text)


def _started(reply: Reply, run: Run) -> str:
    """The run as asked for, then one line per dependency dispatch added because it was not running."""
    if run.kind == "drift":
        return DRIFT_STARTED.format(run_id=escape(run.id), env=escape(run.env))
    added: dict[str, str] = reply.data.get("added_dependencies") or {}
    asked = [s for s in run.services if s not in added] or run.services
    lines = [STARTED.format(run_id=escape(run.id), kind=escape(run.kind), services=escape(", ".join(asked)),
                            env=escape(run.env))]
    if reply.data.get("queued"):
        lines.append(QUEUED.format(why=escape(reply.data["queued"])))
    return "\n".join(lines + [ALSO_DEPLOYING.format(service=escape(s), reason=escape(why))
                              for s, why in added.items()])
