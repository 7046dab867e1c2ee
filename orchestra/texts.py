"""Channel-neutral sentences: refusals and answers that read the same in Slack, on GitHub and in a terminal.

Each channel words its own replies (bot/slack/texts.py, bot/github/texts.py, cli/texts.py);
what the handlers and agents say themselves lives here, in Markdown that all of them show.
"""
from __future__ import annotations

CANCEL_NOTHING = "There is no active run {what}to cancel."
CANCEL_AMBIGUOUS = "Several runs are active{what}: {runs}. Say which one, e.g. `/orchestra cancel {first}`."
CANCEL_ENDED = "run {run_id} already ended ({status})"
NOT_A_RUN = "{kind} does not start a run"
# Pins and the buttons of a failed rollback (handlers/pin.py, handlers/rollback.py).
PINNED = "{service} in {env} is pinned to {version} by {by} at {at}; `/orchestra unpin {service} {env}` to release"
UNPIN_USAGE = "say which service and environment to unpin, e.g. `/orchestra unpin backend production`"
NOT_PINNED = "{service} in {env} is not pinned; nothing to release"
UNPINNED = "{user} released the pin of {service} in {env} (it was on {version}); deploys and rollbacks go again"
ONLY_APPROVERS = "{user} may not retry or pin a rollback in {env}: only its approvers can ({approvers})"
NO_APPROVERS = "{env} has no approvers in the trusted policy, so nobody may use these buttons"
NO_APPROVERS_HINT = "add approvers for {env} to the policy, or use `/rollback` (deployers may)"
BUTTON_FORGED = "that button does not belong to run {run_id} ({why}); nothing was done"
NOT_SAFE_NOW = ("{version} is not a version {service} in {env} can safely go back to now (safe now: {safe}); "
                "nothing was done")
ALREADY_ON = "{service} in {env} is already on {version} (run {run_id}); nothing to retry"
RUN_BUSY = ("run {run_id} ({kind} asked by {owner}, {status}) is already working on {service} in {env}; "
            "nothing was started")
BUTTON_TAKEN = "{by} already answered this alert: {what}"
BUTTON_PENDING = "another click on this alert is being handled right now; nothing more was started"
RETRY_WHAT = "retried the rollback of {service} in {env} to {version} (run {run_id}, now {status})"
PIN_WHAT = "pinned {service} in {env} to {version} (run {run_id}, now {status})"
PIN_ONLY_WHAT = "pinned {service} in {env} to {version}, which it was already on"
# Why dispatch added a dependency to a run (it travels in the run's first event).
NEEDED = "{dependents} {verb} on it and it is not running in {env}"
# Production gets nothing it was not asked for: the requester deploys the dependency first.
PRODUCTION_NEEDS = "{needs}; I don't add services to a production deploy on my own"
PRODUCTION_NEEDS_ONE = "{dependents} {verb} on {dependency}, which is not running in production"
PRODUCTION_HINT = "deploy {them} first with `/deploy {names} prod`, or name {them} in the same request"
# Deploy locks (orchestra/locks.py): queued behind the holder, refused on --no-wait, handed on, fenced, cancelled.
QUEUED_BEHIND = ("{service} in {env} is being deployed by {owner} (run {holder_run}); this run is number {position} "
                 "in the queue and starts when the lock comes to it")
QUEUED_AHEAD = ("{service} in {env} is being handed to run {ahead}; this run is number {position} in the queue "
                "and starts when the lock comes to it")
REFUSED_HINT = "ask again without --no-wait to queue behind it, or wait for it to finish"
LOCK_GRANTED = "the deploy lock of {services} in {env} is this run's now ({why}); starting"
FENCED = ("run {run_id} no longer holds the deploy lock of {service} in {env} (its token {token} is stale; "
          "the lock is held by {holder}); traffic was not moved")
FENCED_HINT = "the lock expired or was handed on while this run was stalled; deploy again"
CANCELLED_BEFORE_SHIFT = "cancelled by {by} before moving {service}'s traffic; rolling back"
CANCELLED_HINT = "the previous version has all traffic again"
CANCEL_COOPERATIVE = "cancel asked by {by}: the deploy stops before it moves traffic again, rolls back, then ends"
CANCELLED_WITH = "cancelled by {by}: {reason}"
CANCELLED_AFTER_DEPLOY = ("cancelled by {by} after the deploy had finished: {services} stay live in {env}; "
                          "`/rollback` to undo it")
