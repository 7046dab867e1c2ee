"""The scheduled drift check (``infrastructure.drift_check``): every environment looked at on a schedule, and a
drift run, with its thread in the channel, for each one that drifted.

A served repository whose configuration asks for it has one timer of no stage (member ``drift-check:<repo>``,
:mod:`jobs.timers`), enrolled by dispatch when it reads that configuration (any run, ``/orchestra drift`` too).
Its check reads the configuration of the repository's default branch: when it no longer asks, the timer goes;
while it does, it runs :func:`agents.iac.drift.run` for each environment, quietly (its progress goes to the log,
not to a run's stream), starts a ``drift`` run for each environment that drifted or could not be checked (which
looks again and says so in the channel), and looks again after ``drift_check``. An environment without drift,
or without state, says nothing: a schedule that spoke every time would be read by nobody. Generated Terraform
has a state per environment; the repository's own Terraform keeps one backend whatever the environment, so it
is looked at once, as the default environment's (staging).
"""
from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from redis import Redis

from agents.context import AgentContext
from agents.iac import drift
from jobs import workspace
from jobs.dispatch import DEFAULT_ENV, dispatch
from orchestra.events import Event, EventBus, EventType
from orchestra.intents import ENVIRONMENTS, Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Run

logger = logging.getLogger(__name__)

WHO = "orchestra:drift-check"
LOOK_BUDGET_S = 480.0  # a look's Terraform in all, within the check job's limit (jobs.timers.CHECK_TIMEOUT_S)
MIN_LOOK_S = 30.0  # less left than this: the environment gets a drift run of its own (a job with its own limit)


class _Quiet(EventBus):
    """The look's progress goes to the log: the look is not a run, and has no stream of its own."""

    def emit(self, run_id: str, type: EventType, actor: str, **data: Any) -> Event:
        logger.info("scheduled drift check: %s", data.get("message") or data.get("summary") or type.value)
        return Event(run_id=run_id, type=type, actor=actor, data={})


def look(redis: Redis, settings: Settings, repo: str, *, budget_s: float = LOOK_BUDGET_S) -> float | None:
    """One scheduled look at ``repo``: a drift run for each environment that drifted; when to look again (None:
    the configuration asks for no drift check any more). Environments the look has no time left for get a
    drift run each, which looks in a job of its own: a slow cloud never makes the look outlive its job."""
    deadline = time.monotonic() + budget_s
    probe = Run(kind="drift", source="schedule", requested_by=WHO, repo=repo)
    try:
        src, config = workspace.prepare(probe, settings, redis=redis)
        every = config.infrastructure.drift_check
        if every is None:
            return None
        found = []
        for env in ENVIRONMENTS if drift.state_per_environment(src, config) else (DEFAULT_ENV,):
            left = deadline - time.monotonic()
            if left < MIN_LOOK_S:
                logger.warning("scheduled drift check of %s: no time left to look at %s; its drift run will", repo,
                               env)
                found.append(env)
                continue
            ctx = AgentContext(run=probe.model_copy(update={"env": env}), settings=settings, redis=redis,
                               bus=_Quiet(redis), workspace=src, config=config, actor="drift-check")
            result = drift.run(ctx, budget_s=left)
            logger.info("scheduled drift check of %s in %s: %s", repo, env, result.summary)
            if not result.passed:
                found.append(env)
        for env in found:
            run = dispatch(Intent(kind=IntentKind.DRIFT, env=env, user=WHO, source="schedule",
                                  text=f"scheduled drift check (every {every:g}s)"), redis=redis, settings=settings,
                           repo=repo)
            logger.info("scheduled drift check of %s: %s drifted; run %s says so in the channel", repo, env, run.id)
        return every
    finally:
        shutil.rmtree(settings.run_dir(probe.id), ignore_errors=True)  # the look's checkout and Terraform folders
