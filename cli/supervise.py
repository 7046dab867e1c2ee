"""Keep a set of named processes running: restart one that exits, stop all on SIGTERM or Ctrl-C.

A process that exits is started again after a pause that doubles with each exit (0.5 s up to
30 s) and starts over once the process has stayed up for a minute; each restart is printed.
A process that exits ``START_LIMIT`` times within ``START_WINDOW`` seconds is not going to get
better by itself (a missing setting, a port taken): everything stops and the exit code is 1. A process
that gave up (exit code 75, :data:`orchestra.health.EXIT_GAVE_UP`: Redis away, or a loop failing, for
``ORCHESTRA_GIVE_UP_S``) is waiting for something outside it to come back: it is restarted with the same
doubling pause, however often, and never stops the others.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestra.health import EXIT_GAVE_UP

FIRST_PAUSE = 0.5
LONGEST_PAUSE = 30.0
HEALTHY_AFTER = 60.0
START_LIMIT = 5
START_WINDOW = 60.0
STOP_GRACE = 15.0


@dataclass
class Child:
    """One named command and the state of its current process."""

    name: str
    command: str
    process: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    exits: list[float] = field(default_factory=list)
    restart_at: float | None = None

    def pause(self) -> float:
        """How long to wait before the next start: doubles with each recent exit."""
        return min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** max(0, len(self.exits) - 1))


class Supervisor:
    """Start ``processes`` (name -> shell command) with ``env``; ``run()`` returns the exit code."""

    def __init__(self, processes: dict[str, str], env: dict[str, str], *,
                 after_start: Callable[[str], None] = lambda name: None) -> None:
        self.children = [Child(name, command) for name, command in processes.items()]
        self.env = env
        self.after_start = after_start
        self.width = max(len(name) for name in processes)
        self.stopping = threading.Event()

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (exit 0) or a process that keeps exiting (exit 1)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            failed = self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if failed else 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.say(f"{signal.Signals(signum).name}: stopping every process")
        self.stopping.set()

    def _watch(self) -> bool:
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
                elif child.process is not None and child.process.poll() is not None:
                    if not self._exited(child, now):
                        return True
        return False

    def _exited(self, child: Child, now: float) -> bool:
        """Schedule a restart; False when the child exited too often to try again."""
        assert child.process is not None
        code = child.process.returncode
        _signal_group(child.process, signal.SIGTERM)  # what it started goes with it
        child.process = None
        if now - child.started_at >= HEALTHY_AFTER:
            child.exits.clear()
        child.exits = [t for t in child.exits if now - t < START_WINDOW] + [now]
        if code == EXIT_GAVE_UP:
            pause = child.pause()
            self.say(f"{child.name} gave up (exit code {code}: Redis or one of its loops stayed down, its "
                     f"output above says which); restarting it in {pause:g} s")
            child.restart_at = now + pause
            return True
        if len(child.exits) >= START_LIMIT:
            self.say(f"{child.name} exited with code {code} {len(child.exits)} times within "
                     f"{START_WINDOW:.0f} s: stopping everything (its output above says why)")
            return False
        pause = child.pause()
        self.say(f"{child.name} exited with code {code}; restarting it in {pause:g} s "
                 f"(exit {len(child.exits)} of {START_LIMIT} allowed within {START_WINDOW:.0f} s)")
        child.restart_at = now + pause
        return True

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.started_at = time.monotonic()
        child.process = subprocess.Popen(child.command, shell=True, env=self.env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._relay_output, args=(child.name.ljust(self.width), child.process),
                         daemon=True).start()
        self.after_start(child.name)

    def _stop_all(self) -> None:
        """SIGTERM every process group, wait for them, SIGKILL what is left after the grace period."""
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"pid {process.pid} did not stop within {STOP_GRACE:.0f} s: killing it")
                _signal_group(process, signal.SIGKILL)
                process.wait()

    def say(self, text: str) -> None:
        print(f"{'up'.ljust(self.width)} | {text}", flush=True)

    @staticmethod
    def _relay_output(prefix: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for text in process.stdout:
            print(f"{prefix} | {text}", end="", flush=True)


def _signal_group(process: subprocess.Popen[str], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # it went away by itself
        pass
