"""Is this process well? What `/healthz` answers, from what the loops and a Redis probe report.

Loops report through :mod:`orchestra.loops` (a step that went through, or one that failed); a
probe thread pings Redis every second. Answering reads only what they recorded, so `/healthz`
answers at once even while Redis hangs. Unwell (HTTP 503) means: Redis has not answered for
``REDIS_STALE_S``, or a loop has been failing, or has not finished a step, for ``LOOP_STALE_S``.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis import Redis, RedisError

REDIS_STALE_S = 3.0
LOOP_STALE_S = 60.0
PROBE_EVERY_S = 1.0


@dataclass
class _Loop:
    last_ok: float | None = None
    failing_since: float | None = None
    error: str = ""


_lock = threading.Lock()
_loops: dict[str, _Loop] = {}
_redis_ok_at: float | None = None
_started = time.monotonic()


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


def report() -> tuple[bool, dict[str, Any]]:
    """Whether the process is well, and why, as JSON-ready data. Reads no Redis."""
    now = time.monotonic()
    with _lock:
        redis_age = None if _redis_ok_at is None else now - _redis_ok_at
        loops = {name: _describe(loop, now) for name, loop in sorted(_loops.items())}
    redis_ok = redis_age is not None and redis_age <= REDIS_STALE_S
    if redis_age is None and now - _started <= REDIS_STALE_S:
        redis_ok = True  # the first ping is on its way
    ok = redis_ok and all(loop["ok"] for loop in loops.values())
    return ok, {"status": "ok" if ok else "unwell",
                "redis": {"ok": redis_ok, "last_answer_s_ago": _rounded(redis_age)}, "loops": loops}


def _describe(loop: _Loop, now: float) -> dict[str, Any]:
    since_ok = None if loop.last_ok is None else now - loop.last_ok
    failing_for = None if loop.failing_since is None else now - loop.failing_since
    ok = (failing_for is None or failing_for <= LOOP_STALE_S) and (since_ok is None or since_ok <= LOOP_STALE_S)
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
