"""`orchestra up` as a real process: a child that exits is restarted, SIGTERM stops every child."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestra.settings import Settings
from tests.support.services import wait_for
from tests.support.slack_workspace import orchestra_process, process_env

SLEEPER = (f"{sys.executable} -c 'import os, time; "
           "open(\"{pidfile}\", \"a\").write(\"%d\\n\" % os.getpid()); time.sleep(600)'")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@contextmanager
def up(settings: Settings, procfile: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`orchestra up --procfile F` with Slack tokens set (no local workspace), its output in a log."""
    (tmp_path / "Procfile").write_text(procfile)
    log = tmp_path / "up.log"
    env = process_env(settings, "http://127.0.0.1:9/api/", GITHUB_WEBHOOK_SECRET="s", SLACK_BOT_TOKEN="xoxb-test")
    with orchestra_process(["up", "--procfile", str(tmp_path / "Procfile")], env, log) as proc:
        yield proc, log


def test_a_process_that_exits_is_restarted_and_the_others_keep_running(settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    steady, flaky = tmp_path / "steady.pids", tmp_path / "flaky.pids"
    flaky_cmd = (f"{sys.executable} -c 'import pathlib, sys, time; m = pathlib.Path(\"{marker}\"); "
                 f"open(\"{flaky}\", \"a\").write(\"%d\\n\" % __import__(\"os\").getpid()); "
                 "sys.exit(3) if not m.exists() and not m.touch() else time.sleep(600)'")
    procfile = f"steady: exec {SLEEPER.format(pidfile=steady)}\nflaky: exec {flaky_cmd}\n"
    with up(settings, procfile, tmp_path) as (proc, log):
        wait_for(lambda: len(_pids(flaky)) == 2, timeout=20, what="the flaky process started a second time")
        assert "flaky exited with code 3; restarting it in 0.5 s" in log.read_text()
        wait_for(lambda: _alive(_pids(flaky)[1]), what="the restarted process")
        time.sleep(1)
        assert proc.poll() is None and len(_pids(steady)) == 1 and _alive(_pids(steady)[0])


def test_sigterm_stops_every_process_it_started(settings: Settings, tmp_path: Path) -> None:
    a, b = tmp_path / "a.pids", tmp_path / "b.pids"
    # b's shell starts a child of its own: the whole process group must go
    procfile = (f"a: exec {SLEEPER.format(pidfile=a)}\n"
                f"b: {SLEEPER.format(pidfile=b)} & {SLEEPER.format(pidfile=b)}\n")
    with up(settings, procfile, tmp_path) as (proc, log):
        wait_for(lambda: len(_pids(a)) == 1 and len(_pids(b)) == 2, timeout=20, what="every process")
        pids = _pids(a) + _pids(b)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "SIGTERM: stopping every process" in log.read_text()
        assert [pid for pid in pids if _alive(pid)] == []


def test_a_process_that_keeps_exiting_stops_everything_with_a_reason(settings: Settings, tmp_path: Path) -> None:
    a = tmp_path / "a.pids"
    procfile = f"a: exec {SLEEPER.format(pidfile=a)}\nbroken: {sys.executable} -c 'raise SystemExit(\"no config\")'\n"
    with up(settings, procfile, tmp_path) as (proc, log):
        assert proc.wait(timeout=40) == 1
        text = log.read_text()
    assert text.count("no config") == 5
    assert "broken exited with code 1 5 times within 60 s: stopping everything" in text
    assert [pid for pid in _pids(a) if _alive(pid)] == []
