"""A run's checkout decides its build's version: the short SHA at the requested ref, or a content hash."""
from __future__ import annotations

from pathlib import Path

from redis import Redis

from agents.build import ref_of, version_of
from agents.context import AgentContext
from jobs.workspace import prepare
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.sample_apps import git, sample_repo, with_hotfix_branch


def _version(repo: Path, settings: Settings, redis: Redis, ref: str | None = None) -> tuple[str, str | None]:
    """(version, ref shown beside it) of a build of ``repo`` at ``ref``, through the run's checkout."""
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(repo), services=["api"], ref=ref))
    src, config = prepare(run, settings, redis=redis)
    ctx = AgentContext(run=RunStore(redis).get(run.id), settings=settings, redis=redis, bus=EventBus(redis),
                       workspace=src, config=config, actor="build")
    return version_of(ctx), ref_of(ctx)


def test_the_tag_is_the_short_sha_of_the_checkout_at_the_requested_ref(tmp_path: Path, settings: Settings,
                                                                        redis: Redis) -> None:
    repo = with_hotfix_branch(sample_repo(tmp_path / "shop", {"api": []}))
    hotfix, main = git(repo, "rev-parse", "hotfix-v2"), git(repo, "rev-parse", "main")
    assert _version(repo, settings, redis, "hotfix-v2") == (hotfix[:7], "hotfix-v2")
    assert _version(repo, settings, redis) == (main[:7], None)
    assert _version(repo, settings, redis, hotfix[:9]) == (hotfix[:7], None)  # asked for by its SHA


def test_a_plain_folder_gets_a_content_hash_that_changes_with_the_code_only(tmp_path: Path, settings: Settings,
                                                                            redis: Redis) -> None:
    folder = sample_repo(tmp_path / "shop", {"api": []})
    first, ref = _version(folder, settings, redis)
    assert first.startswith("src-") and ref is None
    (folder / "api" / "__pycache__").mkdir()
    (folder / "api" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    assert _version(folder, settings, redis) == (first, None)  # another run, same code

    (folder / "api" / "app.py").write_text((folder / "api" / "app.py").read_text() + "# v2\n")
    second, _ = _version(folder, settings, redis)
    assert second.startswith("src-") and second != first
