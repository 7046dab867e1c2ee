"""Channel-neutral sentences: refusals and answers that read the same in Slack, on GitHub and in a terminal.

Each channel words its own replies (bot/slack/texts.py, bot/github/texts.py, cli/texts.py);
what the handlers and agents say themselves lives here, in Markdown that all of them show.
"""
from __future__ import annotations

CANCEL_NOTHING = "There is no active run {what}to cancel."
CANCEL_AMBIGUOUS = "Several runs are active{what}: {runs}. Say which one, e.g. `/orchestra cancel {first}`."
CANCEL_ENDED = "run {run_id} already ended ({status})"
NOT_A_RUN = "{kind} does not start a run"
# Why dispatch added a dependency to a run (it travels in the run's first event).
NEEDED = "{dependents} {verb} on it and it is not running in {env}"
# Production gets nothing it was not asked for: the requester deploys the dependency first.
PRODUCTION_NEEDS = "{needs}; I don't add services to a production deploy on my own"
PRODUCTION_NEEDS_ONE = "{dependents} {verb} on {dependency}, which is not running in production"
PRODUCTION_HINT = "deploy {them} first with `/deploy {names} prod`, or name {them} in the same request"
