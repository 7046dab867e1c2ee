"""The stage graph: which stages exist, in what order, and what each one publishes.

Only stages that really exist are declared. The router walks this graph;
tests may pass a graph of their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from orchestra.events import EventType
from orchestra.store import Run


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline and how its RQ job runs."""

    name: str
    func: str  # dotted path of the RQ entry point, e.g. "jobs.tasks.analyze"
    result: EventType  # the event the stage publishes when it concludes
    timeout: int  # seconds; RQ kills the job after that
    retries: int = 0  # only idempotent stages retry
    approval: bool = False  # parks the run for an approval when the environment asks for one
    kinds: frozenset[str] = field(default_factory=lambda: frozenset({"deploy", "validate"}))

    def applies_to(self, run: Run) -> bool:
        return run.kind in self.kinds


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

    def by_result(self, event_type: EventType) -> Stage | None:
        return next((s for s in self.stages if s.result == event_type), None)


ANALYZE = Stage("analyze", "jobs.tasks.analyze", EventType.CODE_ANALYSIS_RESULT, timeout=300, retries=1)
TEST = Stage("test", "jobs.tasks.test", EventType.TEST_RESULTS, timeout=900, retries=1)

PIPELINE = Graph((ANALYZE, TEST))
