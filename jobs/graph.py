"""The stage graph: which stages exist, in what order, and what each one publishes.

Only stages that really exist are declared. The router walks this graph;
tests may pass a graph of their own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agents.iac import apply as iac_apply
from orchestra import limits
from orchestra.events import Event, EventType
from orchestra.store import Run


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline and how its RQ job runs."""

    name: str
    func: str  # dotted path of the RQ entry point, e.g. "jobs.tasks.analyze"
    result: EventType  # the event the stage publishes when it concludes
    timeout: int  # seconds; RQ kills the job after that
    failed: EventType | None = None  # a different event when its gate says no (default: ``result``)
    retries: int = 0  # only idempotent stages retry
    approval: bool = False  # parks the run for an approval when the environment asks for one
    check: str | None = None  # the scheduled check's entry point, for a stage that goes on without a worker
    kinds: frozenset[str] = field(default_factory=lambda: frozenset({"deploy", "validate"}))
    when: Callable[[Run], bool] | None = None  # what the run must hold besides its kind (None: nothing)
    # A stage that always parks for the environment's approvers (even where the environment asks for no
    # approval), and what they are told; None: only when the environment or the risk route asks.
    asks: Callable[[Run], str] | None = None

    def applies_to(self, run: Run) -> bool:
        return run.kind in self.kinds and (self.when is None or self.when(run))

    def outcome(self, passed: bool) -> EventType:
        return self.result if passed or self.failed is None else self.failed


@dataclass(frozen=True)
class Graph:
    """An ordered pipeline of stages."""

    stages: tuple[Stage, ...]

    def first(self, run: Run) -> Stage | None:
        return next((s for s in self.stages if s.applies_to(run)), None)

    def after(self, name: str, run: Run) -> Stage | None:
        names = [s.name for s in self.stages]
        later = self.stages[names.index(name) + 1:]
        return next((s for s in later if s.applies_to(run)), None)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in the graph")

    def concluded(self, event: Event) -> Stage | None:
        """The stage ``event`` concludes, if it is a stage's result (published by the stage runner)."""
        stage = next((s for s in self.stages if s.name == event.data.get("stage")), None)
        if stage is None or "passed" not in event.data or event.type not in (stage.result, stage.failed):
            return None
        return stage


DEPLOY_ONLY = frozenset({"deploy"})

ANALYZE = Stage("analyze", "jobs.tasks.analyze", EventType.CODE_ANALYSIS_RESULT, timeout=600, retries=1)
TEST = Stage("test", "jobs.tasks.test", EventType.TEST_RESULTS, timeout=1200, retries=1)
BUILD = Stage("build", "jobs.tasks.build", EventType.BUILD_READY, timeout=1800, retries=1, kinds=DEPLOY_ONLY)
# a plan run (`/orchestra plan` on a pull request) runs the iac stage's checks and plan, and nothing else
IAC = Stage("iac", "jobs.tasks.iac", EventType.IAC_READY, timeout=600, kinds=frozenset({"deploy", "plan"}))
# Only for a saved plan that changes something (Run.iac_plan, from the iac stage): infrastructure is never applied
# without an approver, and that approval is the run's one (it covers migrate and deploy); never retried.
IAC_APPLY = Stage("iac_apply", "jobs.tasks.iac_apply", EventType.IAC_READY, timeout=1800, approval=True,
                  kinds=DEPLOY_ONLY, when=iac_apply.has_changes, asks=iac_apply.approval_text)
# Only for a change with schema migrations (Run.migrations, from the analyze stage); never retried (a
# half-applied migration is not run twice); the approval an environment wants is asked here, once.
MIGRATE = Stage("migrate", "jobs.tasks.migrate", EventType.MIGRATIONS_APPLIED, timeout=2100, approval=True,
                kinds=DEPLOY_ONLY, when=lambda run: bool(run.migrations))
DEPLOY = Stage("deploy", "jobs.tasks.deploy", EventType.DEPLOYMENT_SUCCEEDED, failed=EventType.DEPLOYMENT_FAILED,
               timeout=limits.DEPLOY_JOB_S, approval=True, kinds=DEPLOY_ONLY,
               check="jobs.tasks.deploy_check")  # a canary's pauses go on in scheduled checks
OBSERVE = Stage("observe", "jobs.tasks.observe", EventType.OBSERVATION_PASSED,
                failed=EventType.OBSERVABILITY_ALERT, timeout=limits.OBSERVE_JOB_S, kinds=DEPLOY_ONLY,
                check="jobs.tasks.observe_check")
ROLLBACK = Stage("rollback", "jobs.tasks.rollback", EventType.DEPLOYMENT_SUCCEEDED,
                 failed=EventType.DEPLOYMENT_FAILED, timeout=600, approval=True, kinds=frozenset({"rollback"}))
# `/orchestra drift <env>`: a refresh-only plan of the environment against its live infrastructure, never applied
DRIFT = Stage("drift", "jobs.tasks.drift", EventType.DRIFT_CHECKED, timeout=600, kinds=frozenset({"drift"}))

PIPELINE = Graph((ANALYZE, TEST, BUILD, IAC, IAC_APPLY, MIGRATE, DEPLOY, OBSERVE, ROLLBACK, DRIFT))
