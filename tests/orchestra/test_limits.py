"""orchestra validate refuses a canary or a watch that could outlast the job or lock carrying it."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestra import limits
from orchestra.config.loader import validate_file

BASE = """\
project: {name: shop}
deployment:
  strategy: canary
  canary:
    steps: [10, 50, 100]
    analysis_interval: %s
  services:
    - {name: web, path: web}
observability:
  watch: %s
"""


def _problems(tmp_path: Path, interval: str, watch: str) -> list[str]:
    (tmp_path / "web").mkdir(exist_ok=True)
    path = tmp_path / "devops_orchestra.yaml"
    path.write_text(BASE % (interval, watch))
    return validate_file(path)


def test_timings_within_the_jobs_and_locks_are_accepted(tmp_path: Path) -> None:
    assert _problems(tmp_path, "60s", "5m") == []


def test_a_watch_is_not_bounded_by_a_job(tmp_path: Path) -> None:
    """The watch is a series of scheduled checks: an hour's watch holds no job and no lock."""
    assert _problems(tmp_path, "60s", "1h") == []


@pytest.mark.parametrize(("interval", "watch", "line", "field", "says"), [
    ("10m", "5m", 6, "deployment.canary.analysis_interval", "an analysis_interval of at most 366s"),
    ("60s", "13h", 10, "observability.watch", "watch for at most 12h"),
])
def test_a_canary_or_watch_longer_than_its_job_or_lock_is_refused(tmp_path: Path, interval: str, watch: str,
                                                                   line: int, field: str, says: str) -> None:
    [problem] = _problems(tmp_path, interval, watch)
    assert problem.startswith(f"{tmp_path / 'devops_orchestra.yaml'}:{line}: {field}: ") and says in problem


def test_the_limits_are_the_ones_the_jobs_and_locks_use() -> None:
    from agents.deploy.stage import LOCK_TTL_S
    from agents.observability.live import LiveReleases
    from jobs.graph import DEPLOY, OBSERVE

    assert (DEPLOY.timeout, OBSERVE.timeout, LOCK_TTL_S) == (limits.DEPLOY_JOB_S, limits.OBSERVE_JOB_S,
                                                           limits.DEPLOY_LOCK_S)
    assert LiveReleases().lock_ttl_s == limits.OBSERVE_LOCK_S
