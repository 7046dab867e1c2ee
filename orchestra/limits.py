"""How long the jobs and locks that carry a deploy may last, and what a configuration may ask of them.

The stage graph (``jobs/graph.py``) gives RQ these job timeouts and the deploy stage takes its lock
for these times; ``orchestra validate`` refuses a canary that could outlast them, or a watch longer
than a watch may last (``timing_problems``), instead of a job being killed or a lock expiring mid-deploy.
A watch holds no job: it is a series of scheduled checks (``jobs/timers.py``), so only its own state's
lifetime bounds it; a rollback the watch starts takes the lock for ``OBSERVE_LOCK_S``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

DEPLOY_JOB_S = 3600
# A run holds its deploy locks from admission to its end, renewed while it lives (orchestra/locks.py); the
# TTL is how long a lock outlives an owner that stopped renewing it, longer than the longest deploy job.
DEPLOY_LOCK_S = 3900
OBSERVE_JOB_S = 600  # begins the watch; the watch itself goes on in scheduled checks
OBSERVE_LOCK_S = 600  # a rollback started by the watch
WATCH_MAX_S = 12 * 3600  # the watch's saved state lives a day (agents/observability/watch.py)
# Besides the canary's pauses, a deploy starts containers, waits for health and moves the edge.
DEPLOY_MARGIN_S = 300
# A canary step waits its analysis window, then up to two more for enough traffic (agents/observability/policy.py).
WINDOWS_PER_STEP = 3

Loc = tuple[str, ...]


def canary_problem(steps: int, interval: float) -> str | None:
    """Why a canary of ``steps`` steps judged every ``interval`` s could outlast its deploy job (None: it fits)."""
    budget = min(DEPLOY_JOB_S, DEPLOY_LOCK_S) - DEPLOY_MARGIN_S
    worst = steps * WINDOWS_PER_STEP * interval
    if worst <= budget:
        return None
    return (f"a canary of {steps} steps may take {worst:.0f}s (each step waits its {interval:.0f}s window and up "
            f"to two more for traffic), more than the {budget}s a deploy may hold its job and lock; use fewer steps "
            f"or an analysis_interval of at most {budget // (steps * WINDOWS_PER_STEP)}s")


def timing_problems(config: ProjectConfig) -> list[tuple[Loc, str]]:
    """The configured timings that could outlast the job or the lock carrying them, with what to change."""
    problems: list[tuple[Loc, str]] = []
    interval = config.deployment.canary.analysis_interval
    plans = [("", config.deployment.canary.steps)]  # and the risk route's canaries, judged at the same interval
    plans += [(f"the risk.{level} path's canary: ", steps) for level in ("low", "medium", "high")
              if (steps := config.risk.path(level).canary_steps)]
    problems += [(("deployment", "canary", "analysis_interval"), whose + problem) for whose, steps in plans
                 if (problem := canary_problem(len(steps), interval))][:1]
    if config.observability.watch > WATCH_MAX_S:
        problems.append((("observability", "watch"),
                         f"a watch of {config.observability.watch:.0f}s is longer than the {WATCH_MAX_S}s a watch "
                         f"may last; watch for at most {WATCH_MAX_S // 3600}h"))
    return problems
