"""How long the jobs and locks that carry a deploy may last, and what a configuration may ask of them.

The stage graph (``jobs/graph.py``) gives RQ these job timeouts and the deploy and observe stages
take their locks for these times; ``orchestra validate`` refuses a canary or a watch that could
outlast them (``timing_problems``), instead of a job being killed or a lock expiring mid-deploy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

DEPLOY_JOB_S = 3600
DEPLOY_LOCK_S = 1800
OBSERVE_JOB_S = 3600
OBSERVE_LOCK_S = 600
# Besides the canary's pauses, a deploy starts containers, waits for health and moves the edge.
DEPLOY_MARGIN_S = 300
OBSERVE_MARGIN_S = 60
# A canary step waits its analysis window, then up to two more for enough traffic (agents/observability/policy.py).
WINDOWS_PER_STEP = 3

Loc = tuple[str, ...]


def timing_problems(config: ProjectConfig) -> list[tuple[Loc, str]]:
    """The configured timings that could outlast the job or the lock carrying them, with what to change."""
    problems: list[tuple[Loc, str]] = []
    canary = config.deployment.canary
    budget = min(DEPLOY_JOB_S, DEPLOY_LOCK_S) - DEPLOY_MARGIN_S
    worst = len(canary.steps) * WINDOWS_PER_STEP * canary.analysis_interval
    if worst > budget:
        longest = budget // (len(canary.steps) * WINDOWS_PER_STEP)
        problems.append((("deployment", "canary", "analysis_interval"),
                         f"a canary of {len(canary.steps)} steps may take {worst:.0f}s (each step waits its "
                         f"{canary.analysis_interval:.0f}s window and up to two more for traffic), more than "
                         f"the {budget}s a deploy may hold its job and lock; use fewer steps or an "
                         f"analysis_interval of at most {longest}s"))
    budget = min(OBSERVE_JOB_S, OBSERVE_LOCK_S) - OBSERVE_MARGIN_S
    if config.observability.watch > budget:
        problems.append((("observability", "watch"),
                         f"a watch of {config.observability.watch:.0f}s is longer than the {budget}s the observe "
                         f"stage may hold its job and lock; watch for at most {budget}s"))
    return problems
