"""Running the command-line tools agents use (ruff, bandit, pip, pytest, git, hadolint) on users' code.

Tools run with the settings' tool environment only, so no token or key of
ours reaches a user's code, and always with a time limit.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from orchestra.errors import OrchestraError
from orchestra.settings import Settings


def tool_path(name: str) -> str:
    """The executable ``name``: next to our interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise OrchestraError(f"{name} is not installed on this worker",
                             hint=f"install it (pip install -r requirements.txt provides {name})")
    return found


def run_tool(args: list[str], *, cwd: Path, settings: Settings, timeout: float,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool and return its output; a timeout becomes an OrchestraError naming the tool."""
    env = {**settings.tool_env, **(extra_env or {})}
    try:
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise OrchestraError(f"{Path(args[0]).name} did not finish within {timeout:.0f}s",
                             hint="make it faster or raise the stage's time limit") from exc
