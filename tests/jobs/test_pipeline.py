"""`orchestra run` end to end: the real CLI, real queue, real burst workers, the demo repository's branches."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from orchestra.settings import Settings
from tests.jobs.conftest import orchestra_env


@pytest.fixture(autouse=True)
def empty_redis(redis: Redis) -> None:
    """Each run starts on an empty database: timers and queued checks other tests left would be picked up by
    the run's burst workers (which take any job on the stage queue) and hold them up."""


def orchestra(settings: Settings, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=orchestra_env(settings),
                          capture_output=True, text=True, timeout=timeout)


def events_of(settings: Settings, run_id: str) -> list[dict]:
    out = orchestra(settings, "events", "--run", run_id, "--json")
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_a_clean_repository_passes_analysis_and_tests(settings: Settings, demo_repo: Path) -> None:
    result = orchestra(settings, "run", "--repo", str(demo_repo), "--ref", "main", "--validate-only")
    assert result.returncode == 0, result.stdout + result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith("run r-")
    run_id = first.split()[1]
    assert "code_analysis_result" in result.stdout and "test_results" in result.stdout
    assert "succeeded: all stages passed" in rest[-1]
    events = events_of(settings, run_id)
    types = [e["type"] for e in events]
    assert types[0] == "run_requested" and types[-1] == "run_finished"
    assert types.index("code_analysis_result") < types.index("test_results")
    tests = next(e for e in events if e["type"] == "test_results")["data"]
    assert tests["passed"] is True and tests["counts"]["failed"] == 0 and tests["counts"]["passed"] >= 4
    assert tests["coverage"] > 50
    assert all(e["run_id"] == run_id and e["v"] == 1 and e["actor"] for e in events)


@pytest.mark.parametrize(("branch", "expected"), [
    ("demo/lint-error", "backend/pricing.py:"),
    ("demo/missing-import", "DEP001"),
])
def test_the_analysis_gate_fails_with_file_and_line(settings: Settings, demo_repo: Path, branch: str,
                                                   expected: str) -> None:
    result = orchestra(settings, "run", "--repo", str(demo_repo), "--ref", branch, "--validate-only")
    assert result.returncode == 1
    run_id = result.stdout.splitlines()[0].split()[1]
    analysis = next(e for e in events_of(settings, run_id) if e["type"] == "code_analysis_result")["data"]
    assert analysis["passed"] is False
    errors = [f for f in analysis["findings"] if f["severity"] == "error"]
    assert any(expected in f"{f['file']}:{f['line']} {f['rule']}" for f in errors), errors
    assert all(f["file"] and f["line"] for f in errors)
    assert "test_results" not in result.stdout  # the gate stopped the run before the tests
    assert "failed:" in result.stdout.splitlines()[-1]


def test_a_failing_test_fails_the_run_and_names_the_test(settings: Settings, demo_repo: Path) -> None:
    result = orchestra(settings, "run", "--repo", str(demo_repo), "--ref", "demo/failing-test", "--validate-only")
    assert result.returncode == 1
    run_id = result.stdout.splitlines()[0].split()[1]
    tests = next(e for e in events_of(settings, run_id) if e["type"] == "test_results")["data"]
    failures = [f for s in tests["services"].values() for f in s["failures"]]
    assert tests["passed"] is False and failures
    assert failures[0]["test"].startswith("tests.") and failures[0]["file"] and failures[0]["line"]


def test_an_unknown_ref_is_a_failed_run_with_a_reason(settings: Settings, demo_repo: Path) -> None:
    result = orchestra(settings, "run", "--repo", str(demo_repo), "--ref", "no-such-branch")
    assert result.returncode == 1
    assert "ref 'no-such-branch' does not exist" in result.stdout


def test_an_unknown_service_is_refused_with_a_suggestion(settings: Settings, demo_repo: Path) -> None:
    result = orchestra(settings, "run", "--repo", str(demo_repo), "--service", "backnd")
    assert result.returncode == 1
    assert "unknown service `backnd`" in result.stderr and "backend" in result.stderr
    assert "run r-" not in result.stdout
