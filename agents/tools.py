"""Running the command-line tools agents use (ruff, bandit, pip, pytest, git, hadolint) on users' code.

Tools run with the settings' tool environment only, so no token or key of
ours reaches a user's code, and always with a time limit. A tool that starts processes of its own
(Terraform and its provider plugins, checkov) runs with :func:`run_in_group`, which stops them all.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

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


def run_in_group(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float, grace_s: float = 0.0,
                 stdout: IO[str] | int = subprocess.PIPE, stderr: IO[str] | int = subprocess.PIPE,
                 preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool in a process group of its own and wait for it. Past ``timeout`` (TimeoutExpired is raised),
    or when this process is interrupted (the job's time limit, a shutdown: any BaseException), the whole group
    is stopped first, with :func:`stop_group`. Output not sent to ``stdout``/``stderr`` files is returned."""
    with subprocess.Popen(args, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True, start_new_session=True,
                          preexec_fn=preexec_fn) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            # the group is a session of its own: the worker killing this job's process group would not reach it
            stop_group(proc, grace_s)
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def stop_group(proc: subprocess.Popen[str], grace_s: float = 0.0) -> None:
    """SIGKILL to ``proc``'s process group (its children too), after a SIGTERM and ``grace_s`` seconds for the
    group to stop by itself when ``grace_s`` is more than 0."""
    try:
        if grace_s > 0:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)  # the tool, or a child that outlived it
    except ProcessLookupError:
        pass  # the whole group is gone
    proc.communicate()
