"""A clean copy of the run's code, at the requested commit, shared by its stages."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis

from orchestra.repos import checkout, head_commit
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig


def source_dir(settings: Settings, run: Run) -> Path:
    """The run's checkout; named like the repository, as inference names a root service after it."""
    name = run.repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
    return settings.run_dir(run.id) / "src" / name


def prepare(run: Run, settings: Settings, *, redis: Redis) -> tuple[Path, ProjectConfig]:
    """Check the run's code out once (idempotent) and load its configuration."""
    from orchestra.config import load_config

    src = source_dir(settings, run)
    if not (src / ".orchestra-ready").exists():
        checkout(run.repo, src, run.commit or run.ref)
        if run.commit is None and (src / ".git").exists():
            RunStore(redis).update(run.id, commit=head_commit(src))
        (src / ".orchestra-ready").touch()
    return src, load_config(src)
