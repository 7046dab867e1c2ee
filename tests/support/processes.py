"""Real SIGKILLs of a worker and everything below it."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def children_of() -> dict[int, list[tuple[int, int]]]:
    """Every live process's children as (start time, pid), by parent pid, read from /proc."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        parents.setdefault(int(fields[1]), []).append((int(fields[19]), int(stat.parent.name)))
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (RQ's work horse runs in a session of its own, so killpg misses it)."""
    parents = children_of()
    found, todo = [], [pid]
    while todo:
        children = [child for _, child in parents.get(todo.pop(), [])]
        found += children
        todo += children
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, as a crash would take them.

    The tree is frozen first (SIGSTOP, repeated until no new process appears) so that nothing forks or
    ends unseen between the listing and the kill; a child that ended on its own before it was frozen is
    simply no longer there. ``pid`` itself must be alive."""
    os.kill(pid, signal.SIGSTOP)
    frozen: set[int] = set()
    while new := [p for p in descendants(pid) if p not in frozen]:
        for p in new:
            _signal(p, signal.SIGSTOP)
        frozen.update(new)
    for p in frozen:
        _signal(p, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
