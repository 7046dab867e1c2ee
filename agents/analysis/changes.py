"""What a run changes: the changed files and the diff, for risk classification and review."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agents.context import AgentContext
from agents.deploy.targets.state import get_live

SHA = re.compile(r"[0-9a-f]{7,40}")

MAX_DIFF_CHARS = 400_000


@dataclass(frozen=True)
class Change:
    files: list[str]
    diff: str
    basis: str  # how the change was found, for the reasons shown to the user


def change_of(ctx: AgentContext) -> Change | None:
    """The run's change. A deploy is judged against what is live where it goes (every commit since, not
    only the last: a migration several commits back counts); otherwise, or when nothing of it is live,
    from the webhook's file list and the commit's parent, when there is one."""
    since = _live_since(ctx)
    if since:
        names = {f for sha in since for f in _git(ctx.workspace, "diff", "--name-only", sha, "HEAD").splitlines()}
        text = "".join(_git(ctx.workspace, "diff", sha, "HEAD") for sha in since)[:MAX_DIFF_CHARS]
        basis = f"everything since the live {', '.join(sorted(since))} in {ctx.run.env}"
        return Change(sorted(n for n in names if n), text, basis)
    listed = list(ctx.run.origin.get("changed_files") or [])
    diff = _git_diff(ctx.workspace)
    if diff is None:
        return Change(listed, "", "the push's file list") if listed else None
    files = listed or [line for line in _git(ctx.workspace, "diff", "--name-only", "HEAD~1", "HEAD").splitlines()
                       if line]
    return Change(files, diff, "the commit against its parent")


def _live_since(ctx: AgentContext) -> set[str]:
    """The commits the run's services are live at in its environment, those this checkout has."""
    if ctx.run.kind != "deploy" or not ctx.run.env or not (ctx.workspace / ".git").exists():
        return set()
    since = set()
    for service in ctx.run.services:
        state = get_live(ctx.redis, service, ctx.run.env)
        version = state.current.version if state and state.current else ""
        if SHA.fullmatch(version) and subprocess.run(
                ["git", "cat-file", "-e", f"{version}^{{commit}}"], cwd=ctx.workspace, capture_output=True,
                timeout=60).returncode == 0:
            since.add(version)
    return since


def _git_diff(root: Path) -> str | None:
    if not (root / ".git").exists():
        return None
    try:
        return _git(root, "diff", "HEAD~1", "HEAD")[:MAX_DIFF_CHARS]
    except subprocess.CalledProcessError:  # a first commit has no parent
        return None


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                          timeout=60).stdout
