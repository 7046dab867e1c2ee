"""RQ entry points: one thin function per stage, taking the run id."""
from __future__ import annotations

from typing import Any

from agents import analyze as analyze_agent
from agents import testing as testing_agent
from jobs.graph import ANALYZE, TEST
from jobs.runner import execute_stage


def analyze(run_id: str) -> dict[str, Any]:
    """Lint, check imports and structure, classify the change's risk."""
    return execute_stage(run_id, ANALYZE, analyze_agent.run)


def test(run_id: str) -> dict[str, Any]:
    """Run the repository's own tests with coverage in an isolated virtualenv."""
    return execute_stage(run_id, TEST, testing_agent.run)
