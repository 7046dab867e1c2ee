"""Repository access: the served repositories, which one holds a service, clones, fetches and checkouts."""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from orchestra.errors import NotFound, OrchestraError
from orchestra.settings import Settings

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

logger = logging.getLogger(__name__)

_IGNORED = shutil.ignore_patterns(".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache",
                                  "node_modules", ".mypy_cache")


def resolve_service(service: str | None, settings: Settings, *,
                    repo: str | Path | None = None) -> tuple[str, ProjectConfig]:
    """The repository (path or URL) holding ``service`` and its configuration.

    With ``repo`` only that repository is searched; otherwise every repository
    in ``settings.repos``. No service means the first repository, whole.
    """
    from orchestra.config import load_config

    candidates = [str(repo)] if repo is not None else list(settings.repos)
    known: list[str] = []
    for candidate in candidates:
        config = load_config(local_copy(candidate, settings))
        names = config.service_names()
        if service is None or service in names:
            return candidate, config
        known.extend(names)
    if len(candidates) == 1 and service is not None:
        config.service(service)  # raises NotFound with a "did you mean"
    raise NotFound(f"no service {service!r} in the served repositories",
                   hint=f"known services: {', '.join(sorted(set(known))) or 'none'}")


def local_copy(repo: str, settings: Settings) -> Path:
    """A local directory for ``repo``: the path itself, or a cached clone of a git URL."""
    if "://" not in repo and not repo.startswith("git@"):
        path = Path(repo)
        if not path.is_dir():
            raise NotFound(f"repository {repo} does not exist", hint="check --repo or ORCHESTRA_REPOS")
        return path
    dest = settings.cache / "repos" / repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    args = ["git", "-C", str(dest), "pull", "--quiet", "--ff-only"] if dest.exists() else \
        ["git", "clone", "--quiet", "--depth", "1", "--", repo, str(dest)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise OrchestraError(f"cannot fetch {repo}: {proc.stderr.strip()[-300:]}",
                             hint="check the URL and that this machine can reach it")
    return dest


def checkout(repo: str, dest: Path, ref: str | None) -> None:
    """A fresh copy of ``repo`` in ``dest``: a clone at ``ref`` (branch, tag or sha), or of a plain folder."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if _is_git(repo):
        _clone(repo, dest, ref)
    elif ref:
        raise OrchestraError(f"{repo} is not a git repository, so ref {ref!r} "
                             "cannot be checked out", hint="drop the ref or point --repo at a git checkout")
    elif not Path(repo).is_dir():
        raise OrchestraError(f"repository {repo} does not exist",
                             hint="check the path, or ORCHESTRA_REPOS")
    else:
        shutil.copytree(repo, dest, ignore=_IGNORED)


def head_commit(checkout_dir: Path) -> str:
    """The commit a checkout is at."""
    return _git(checkout_dir, "rev-parse", "HEAD")


def _is_git(repo: str) -> bool:
    return "://" in repo or repo.startswith("git@") or (Path(repo) / ".git").exists()


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
