"""A clean copy of the run's code, at the requested commit, shared by its stages."""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis

from orchestra.errors import OrchestraError
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

logger = logging.getLogger(__name__)

_IGNORED = shutil.ignore_patterns(".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache",
                                  "node_modules", ".mypy_cache")


def source_dir(settings: Settings, run: Run) -> Path:
    """The run's checkout; named like the repository, as inference names a root service after it."""
    name = run.repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
    return settings.run_dir(run.id) / "src" / name


def prepare(run: Run, settings: Settings, *, redis: Redis) -> tuple[Path, ProjectConfig]:
    """Check the run's code out once (idempotent) and load its configuration."""
    from orchestra.config import load_config

    src = source_dir(settings, run)
    if not (src / ".orchestra-ready").exists():
        _fresh_copy(run, src)
        if run.commit is None and (src / ".git").exists():
            RunStore(redis).update(run.id, commit=_git(src, "rev-parse", "HEAD"))
        (src / ".orchestra-ready").touch()
    return src, load_config(src)


def _fresh_copy(run: Run, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    is_git = "://" in run.repo or run.repo.startswith("git@") or (Path(run.repo) / ".git").exists()
    if is_git:
        _clone(run.repo, dest, run.commit or run.ref)
    elif run.ref or run.commit:
        raise OrchestraError(f"{run.repo} is not a git repository, so ref {run.ref or run.commit!r} "
                             "cannot be checked out", hint="drop the ref or point --repo at a git checkout")
    elif not Path(run.repo).is_dir():
        raise OrchestraError(f"repository {run.repo} does not exist",
                             hint="check the path, or ORCHESTRA_REPOS")
    else:
        shutil.copytree(run.repo, dest, ignore=_IGNORED)


def _clone(repo: str, dest: Path, ref: str | None) -> None:
    logger.info("cloning %s at %s into %s", repo, ref or "HEAD", dest)
    _git(None, "clone", "--quiet", "--no-checkout", "--", repo, str(dest))
    target = ref or "HEAD"
    for candidate in (target, f"origin/{target}", "FETCH_HEAD"):
        try:
            if candidate == "FETCH_HEAD":  # a commit only the remote has (a push the local copy lacks)
                _git(dest, "fetch", "--quiet", "origin", target)
            _git(dest, "checkout", "--quiet", "--detach", candidate, "--")
            return
        except OrchestraError:
            continue
    raise OrchestraError(f"ref {target!r} does not exist in {repo}",
                         hint="push the branch or tag first, or check its spelling")


def _git(cwd: Path | None, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise OrchestraError(f"git {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip()
