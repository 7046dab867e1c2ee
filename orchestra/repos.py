"""Repository access: the served repositories, which one holds a service, clones, fetches and checkouts."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from orchestra.errors import NotFound, OrchestraError
from orchestra.settings import Settings

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

logger = logging.getLogger(__name__)

_JUNK = (".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules", ".mypy_cache")
_IGNORED = shutil.ignore_patterns(*_JUNK)
SHORT_SHA = 7  # hex digits of a commit where people see it: image tags, threads, answers
SOURCE_PREFIX = "src-"  # a plain folder's version: a content hash, never mistaken for a commit
_HEX = re.compile(r"[0-9a-f]{4,40}")


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


def short_sha(commit: str) -> str:
    """The commit as people read it (``3f9c2ab``)."""
    return commit[:SHORT_SHA]


def source_version(checkout_dir: Path) -> str:
    """What a checkout is: its commit's short SHA, or for a plain folder the ``src-`` content hash."""
    if (checkout_dir / ".git").exists():
        return short_sha(head_commit(checkout_dir))
    return content_version(checkout_dir)


def content_version(folder: Path) -> str:
    """``src-`` and 7 hex digits of a hash of the folder's files (paths, bytes, executable bits).

    Caches, virtualenvs and orchestra's own ``.orchestra-*`` markers do not count, so the version
    changes when the code does and not otherwise.
    """
    digest = hashlib.sha256()
    for path in sorted(_source_files(folder)):
        rel = path.relative_to(folder).as_posix()
        body = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        executable = b"x" if not path.is_symlink() and os.access(path, os.X_OK) else b"-"
        digest.update(b"%d:%s%s%d:" % (len(rel.encode()), rel.encode(), executable, len(body)) + body)
    return SOURCE_PREFIX + digest.hexdigest()[:SHORT_SHA]


def _source_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` that is code (a symlinked directory counts as its link)."""
    files = []
    for root, dirs, names in os.walk(folder):
        links = [d for d in dirs if Path(root, d).is_symlink()]  # os.walk does not enter them
        dirs[:] = [d for d in dirs if _counts(d) and d not in links]
        files += [Path(root, n) for n in names + links if _counts(n)]
    return files


def _counts(name: str) -> bool:
    return name not in _JUNK and name != ".git" and not name.startswith(".orchestra-") \
        and not name.endswith(".pyc")


def ref_beside(ref: str | None, commit: str | None) -> str | None:
    """The ref to show beside a version: None when no ref was asked for or it is the commit itself."""
    if not ref or (commit and _HEX.fullmatch(ref.lower()) and commit.lower().startswith(ref.lower())):
        return None
    return ref


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
