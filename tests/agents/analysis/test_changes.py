"""A deploy's change is everything since what is live where it goes, not only its last commit."""
from __future__ import annotations

import subprocess
from pathlib import Path

from redis import Redis

from agents.analysis.changes import change_of
from agents.analysis.risk import RiskLevel, classify_risk
from agents.context import AgentContext
from agents.deploy.targets.state import LiveState, Release, set_live
from orchestra.config import parse_config
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.files import write_files

CONFIG = "project: {name: shop}\ndeployment:\n  services:\n    - {name: api, path: api, port: 5001}\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    write_files(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "--short=7", "HEAD")


def context(repo: Path, redis: Redis, settings: Settings, *, kind: str = "deploy") -> AgentContext:
    run = Run(kind=kind, requested_by="U0ALICE", repo=str(repo), services=["api"], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=parse_config(CONFIG, filename="devops_orchestra.yaml"))


def live_at(redis: Redis, version: str) -> None:
    release = Release(version=version, image=f"shop-api:{version}", port=5001, container="c", run_id="r-0")
    set_live(redis, LiveState(service="api", env="staging", edge_port=8080, edge_prefix="", current=release))


def test_a_migration_behind_a_trivial_last_commit_still_makes_the_deploy_high_risk(
        tmp_path: Path, redis: Redis, settings: Settings) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    live = commit(repo, {"api/app.py": "print('v1')\n"}, "v1")
    commit(repo, {"api/migrations/0002_drop.sql": "ALTER TABLE orders DROP COLUMN note;\n"}, "drop a column")
    commit(repo, {"README.md": "typo\n"}, "fix a typo")

    assert classify_risk(change_of(context(repo, redis, settings)).files).level == RiskLevel.LOW  # type: ignore[union-attr]
    live_at(redis, live)  # v1 runs in staging: the deploy brings both later commits
    change = change_of(context(repo, redis, settings))
    assert change is not None and change.files == ["README.md", "api/migrations/0002_drop.sql"]
    assert "DROP COLUMN" in change.diff and live in change.basis
    assert classify_risk(change.files, change.diff).level == RiskLevel.HIGH
    # a validate run (a pull request) is still judged by its own commit
    assert change_of(context(repo, redis, settings, kind="validate")).files == ["README.md"]  # type: ignore[union-attr]


def test_a_live_version_this_checkout_does_not_have_falls_back_to_the_last_commit(
        tmp_path: Path, redis: Redis, settings: Settings) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    commit(repo, {"api/app.py": "print('v1')\n"}, "v1")
    commit(repo, {"docs/guide.md": "more\n"}, "docs")
    for foreign in ("0badc0d", "--help", "HEAD~1"):  # another history's commit, and no option or ref smuggled in
        live_at(redis, foreign)
        change = change_of(context(repo, redis, settings))
        assert change is not None and change.files == ["docs/guide.md"]
        assert change.basis == "the commit against its parent"
