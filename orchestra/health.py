"""Is this process well? What `/healthz` answers, from what the loops and a Redis probe report.

Loops report through :mod:`orchestra.loops` (a step that went through, or one that failed); a
probe thread pings Redis every second. Answering reads only what they recorded, so `/healthz`
answers at once even while Redis hangs. Unwell (HTTP 503) means: Redis has not answered for
``REDIS_STALE_S``, or a loop has been failing, or has not finished a step, for ``LOOP_STALE_S`` (or half the
give-up limit, if shorter).

A process that cannot recover gives up (:func:`start_watchdog`): when Redis has not answered for the
give-up limit (``ORCHESTRA_GIVE_UP_S``, 5 minutes by default), or one of its loops has failed every try
for as long, `/healthz` says ``giving up`` and why, the process is sent SIGTERM so that it stops the way
it always does, and it exits with :data:`EXIT_GAVE_UP` (hard, after ``GIVE_UP_GRACE_S``, if the clean stop
hangs). Its supervisor (`orchestra up`, systemd, Kubernetes) starts it afresh: new connections, a new
Sentinel lookup, new loops. Until then `/healthz` has been unwell for a while already, with
``gives_up_in_s`` counting down.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis import Redis, RedisError

logger = logging.getLogger(__name__)

REDIS_STALE_S = 3.0
LOOP_STALE_S = 60.0
PROBE_EVERY_S = 1.0
EXIT_GAVE_UP = 75  # sysexits' EX_TEMPFAIL: a temporary failure, start me again
GIVE_UP_GRACE_S = 15.0  # how long the clean stop after giving up may take before the process just exits


@dataclass
class _Loop:
    last_ok: float | None = None
    failing_since: float | None = None
    error: str = ""


_lock = threading.Lock()
_loops: dict[str, _Loop] = {}
_redis_ok_at: float | None = None
_started = time.monotonic()
_give_up_s: float | None = None  # set by start_watchdog
_gave_up: str | None = None  # why this process gave up


def beat(name: str) -> None:
    """Loop ``name`` finished a step."""
    with _lock:
        loop = _loops.setdefault(name, _Loop())
        loop.last_ok, loop.failing_since, loop.error = time.monotonic(), None, ""


def failing(name: str, error: str) -> None:
    """Loop ``name``'s step raised ``error``."""
    with _lock:
        loop = _loops.setdefault(name, _Loop())
        loop.failing_since = loop.failing_since or time.monotonic()
        loop.error = error


def start_probe(redis: Redis) -> None:
    """Ping Redis every second from a daemon thread (once per process)."""
    global _started
    with _lock:
        _started = time.monotonic()  # silence counts from here (a worker may reconcile for a while before)

    def probe() -> None:
        global _redis_ok_at
        while True:
            try:
                redis.ping()
                with _lock:
                    _redis_ok_at = time.monotonic()
            except RedisError:
                pass
            time.sleep(PROBE_EVERY_S)
    threading.Thread(target=probe, name="health-probe", daemon=True).start()


def start_watchdog(give_up_s: float) -> None:
    """Give up (see the module's docstring) once Redis or a loop has failed for ``give_up_s`` (once per process)."""
    global _give_up_s
    _give_up_s = give_up_s

    def watch() -> None:
        while (reason := cannot_recover(give_up_s)) is None:
            time.sleep(PROBE_EVERY_S / 2)
        give_up(reason)
    threading.Thread(target=watch, name="health-watchdog", daemon=True).start()


def cannot_recover(give_up_s: float, now: float | None = None) -> str | None:
    """Why this process cannot recover by itself, or None while it may."""
    now = time.monotonic() if now is None else now
    with _lock:
        silent_for = now - (_started if _redis_ok_at is None else _redis_ok_at)
        failing = {name: (now - loop.failing_since, loop.error) for name, loop in _loops.items()
                   if loop.failing_since is not None}
    if silent_for >= give_up_s:
        return f"Redis has not answered for {silent_for:.0f} s"
    for name, (seconds, error) in sorted(failing.items()):
        if seconds >= give_up_s:
            return f"the {name} loop has failed every try for {seconds:.0f} s (last error: {error})"
    return None


def give_up(reason: str) -> None:
    """Say why, stop the process the way SIGTERM does, and make sure it exits with :data:`EXIT_GAVE_UP`."""
    global _gave_up
    with _lock:
        _gave_up = reason
    logger.error("giving up: %s (limit ORCHESTRA_GIVE_UP_S=%g s); exiting with code %s so that the supervisor "
                 "starts this process afresh", reason, _give_up_s or 0, EXIT_GAVE_UP)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GIVE_UP_GRACE_S)
    logger.error("giving up: the clean stop took longer than %g s; exiting now", GIVE_UP_GRACE_S)
    logging.shutdown()
    os._exit(EXIT_GAVE_UP)


def exit_code() -> int:
    """What the process's command returns once it has stopped: :data:`EXIT_GAVE_UP` if it gave up, else 0."""
    return EXIT_GAVE_UP if gave_up() else 0


def gave_up() -> str | None:
    """Why the process gave up, or None."""
    with _lock:
        return _gave_up


def report() -> tuple[bool, dict[str, Any]]:
    """Whether the process is well, and why, as JSON-ready data. Reads no Redis."""
    now = time.monotonic()
    with _lock:
        redis_age = None if _redis_ok_at is None else now - _redis_ok_at
        loops = {name: _describe(loop, now) for name, loop in sorted(_loops.items())}
        given_up = _gave_up
    redis_ok = redis_age is not None and redis_age <= REDIS_STALE_S
    if redis_age is None and now - _started <= REDIS_STALE_S:
        redis_ok = True  # the first ping is on its way
    ok = redis_ok and all(loop["ok"] for loop in loops.values()) and given_up is None
    body: dict[str, Any] = {"status": "giving up" if given_up else "ok" if ok else "unwell",
            "redis": {"ok": redis_ok, "last_answer_s_ago": _rounded(redis_age)}, "loops": loops}
    if _give_up_s is not None:
        body["giving_up"] = given_up
        body["gives_up_in_s"] = None if ok else _rounded(_gives_up_in(_give_up_s, redis_age, loops))
    return ok, body


def _gives_up_in(limit: float, redis_age: float | None, loops: dict[str, dict[str, Any]]) -> float:
    """Seconds until the process gives up if nothing gets better."""
    silent_for = redis_age if redis_age is not None else time.monotonic() - _started
    worst = max([silent_for, *(loop["failing_for_s"] or 0.0 for loop in loops.values())])
    return max(0.0, limit - worst)


def _describe(loop: _Loop, now: float) -> dict[str, Any]:
    since_ok = None if loop.last_ok is None else now - loop.last_ok
    failing_for = None if loop.failing_since is None else now - loop.failing_since
    stale = LOOP_STALE_S if _give_up_s is None else min(LOOP_STALE_S, _give_up_s / 2)
    ok = (failing_for is None or failing_for <= stale) and (since_ok is None or since_ok <= stale)
    return {"ok": ok, "last_step_s_ago": _rounded(since_ok), "failing_for_s": _rounded(failing_for),
            "error": loop.error}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def wsgi_app(fallback: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that answers ``/healthz`` and hands every other path to ``fallback``."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return fallback(environ, start_response)
        ok, body = report()
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        return [json.dumps(body).encode()]
    return app
