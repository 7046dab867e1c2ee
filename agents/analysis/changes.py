"""What a run changes: the changed files and the diff, for risk classification and review."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from agents.context import AgentContext

MAX_DIFF_CHARS = 400_000


@dataclass(frozen=True)
class Change:
    files: list[str]
    diff: str
    basis: str  # how the change was found, for the reasons shown to the user


def change_of(ctx: AgentContext) -> Change | None:
    """The run's change: from the webhook's file list and the commit's parent, when there is one."""
    listed = list(ctx.run.origin.get("changed_files") or [])
    diff = _git_diff(ctx.workspace)
    if diff is None:
        return Change(listed, "", "the push's file list") if listed else None
    files = listed or [line for line in _git(ctx.workspace, "diff", "--name-only", "HEAD~1", "HEAD").splitlines()
                       if line]
    return Change(files, diff, "the commit against its parent")


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
