"""run_in_group: a tool and every process it started are stopped past the time limit or when the job is
interrupted, with real processes: a shell (the tool) that starts a ``sleep`` (its child) in the background.

Attacks: a child that outlives the tool's own exit path, a tool and child that ignore SIGTERM (stopped by
SIGKILL once the grace is over), RQ's own job time limit raising in the middle of the wait.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from agents.tools import run_in_group


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (killed, waiting for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _stopped(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while any(_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tool(pids: Path, *, ignore_term: bool) -> list[str]:
    """A shell that starts ``sleep 60`` in the background, writes both pids down and waits for it. Its output
    goes to no pipe (as Terraform's goes to files), so nothing waits for the child to close one."""
    trap = "trap '' TERM; " if ignore_term else ""
    return ["/bin/sh", "-c", f"{trap}sleep 60 & echo $$ $! > {pids}; wait"]


@pytest.mark.parametrize("grace_s, ignore_term", [(0.0, False), (0.5, True)])
def test_past_the_time_limit_the_tool_and_its_child_are_stopped(tmp_path: Path, grace_s: float,
                                                                  ignore_term: bool) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_in_group(_tool(pids, ignore_term=ignore_term), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                     timeout=1.0, grace_s=grace_s, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.monotonic() - started
    tool, child = (int(p) for p in pids.read_text().split())
    assert _stopped([tool, child]), f"still running: tool {_running(tool)}, child {_running(child)}"
    assert 1.0 + grace_s <= took < 1.0 + grace_s + 1.5  # the grace is waited out only when there is one


def test_the_jobs_time_limit_stops_the_tool_and_its_child(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    with pytest.raises(JobTimeoutException), UnixSignalDeathPenalty(1, JobTimeoutException, job_id="tool"):
        run_in_group(_tool(pids, ignore_term=False), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=30,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tool, child = (int(p) for p in pids.read_text().split())
    assert _stopped([tool, child]), f"still running: tool {_running(tool)}, child {_running(child)}"


def test_a_tool_that_finishes_gives_its_output_and_exit_code(tmp_path: Path) -> None:
    done = run_in_group(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], cwd=tmp_path,
                        env={"PATH": "/usr/bin:/bin"}, timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
