"""The repositories the bot serves, and which one holds a service."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from orchestra.errors import NotFound, OrchestraError
from orchestra.settings import Settings

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig


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
