"""A bounded load generator for loopback URLs: N requests or T seconds at most, a few workers.

Used by the demo traffic of runs (:mod:`agents.observability.traffic`), by tests and by benchmarks.
It only talks to 127.0.0.1 and ::1 (literal addresses, never a name), never follows redirects
(http.client does not), counts status codes and latencies, and never runs unbounded
(at most MAX_SECONDS, MAX_REQUESTS).
"""
from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from orchestra.errors import OrchestraError

MAX_SECONDS = 900.0
MAX_REQUESTS = 1_000_000
LOOPBACK = ("127.0.0.1", "::1")  # literal addresses only: a name could resolve anywhere


class LoadError(OrchestraError):
    """The load generator was asked for something it will not do."""


@dataclass
class LoadResult:
    """What the load run saw: status codes (0 = connection error), latencies, per-version counts."""

    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for code, n in self.statuses.items() if code == 0 or code >= 500)

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, object]:
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        return {"requests": self.total, "failed": self.failed, "seconds": round(self.seconds, 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "versions": dict(self.versions),
                "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
                "p99_ms": round(p99 * 1000, 1) if p99 is not None else None}


def check_url(url: str) -> urllib.parse.SplitResult:
    """Only plain-HTTP loopback URLs are allowed."""
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise LoadError(f"refusing to load {url!r}", hint="give an http:// URL on 127.0.0.1 or [::1]")
    return parts


def run_load(url: str, *, requests: int | None = None, seconds: float | None = None,
             concurrency: int = 4, rate: float | None = None, timeout: float = 5.0,
             stop: threading.Event | None = None, version_header: str = "X-App-Version") -> LoadResult:
    """Send GET requests to ``url`` until ``requests`` were sent, ``seconds`` passed or ``stop`` is set.

    ``rate`` caps the total requests per second (spread over the workers).
    """
    parts = check_url(url)
    if requests is None and seconds is None:
        raise LoadError("unbounded load", hint="give a number of requests, a duration, or both")
    if not 1 <= concurrency <= 64:
        raise LoadError(f"concurrency {concurrency} is out of range", hint="use 1 to 64 workers")
    budget = _Budget(min(requests or MAX_REQUESTS, MAX_REQUESTS), min(seconds or MAX_SECONDS, MAX_SECONDS),
                     rate, stop)
    result, lock = LoadResult(), threading.Lock()
    workers = [threading.Thread(target=_worker, args=(parts, budget, result, lock, timeout, version_header),
                                daemon=True) for _ in range(concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    result.seconds = time.monotonic() - budget.started
    return result


class _Budget:
    """Hands out request slots: at most ``count``, until ``deadline``, paced to ``rate``."""

    def __init__(self, count: int, seconds: float, rate: float | None, stop: threading.Event | None) -> None:
        self.left = count
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = self.started
        self.stop = stop
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0 or (self.stop is not None and self.stop.is_set()):
                return False
            at = self.next_at
            self.next_at = max(self.next_at + self.interval, time.monotonic() - 1.0)
            self.left -= 1
        delay = at - time.monotonic()
        if at >= self.deadline:
            return False
        if delay > 0:
            time.sleep(delay)
        return time.monotonic() < self.deadline


def _worker(parts: urllib.parse.SplitResult, budget: _Budget, result: LoadResult, lock: threading.Lock,
            timeout: float, version_header: str) -> None:
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection | None = None
    while budget.take():
        started = time.perf_counter()
        status, version = 0, None
        for _attempt in range(2):  # a keep-alive connection closed by a reload: retry once on a fresh one
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                                      timeout=timeout)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status, version = resp.status, resp.getheader(version_header)
                break
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
        elapsed = time.perf_counter() - started
        with lock:
            result.statuses[status] += 1
            if version:
                result.versions[version] += 1
            if status:
                result.latencies.append(elapsed)
    if conn is not None:
        conn.close()


@dataclass
class BackgroundLoad:
    """Load running in a thread; ``result`` is set once it has stopped."""

    thread: threading.Thread
    stop: threading.Event
    result: LoadResult | None = None


@contextmanager
def background_load(url: str, *, seconds: float, **options: object) -> Iterator[BackgroundLoad]:
    """Run :func:`run_load` in a thread for the duration of the ``with`` block (at most ``seconds``)."""
    check_url(url)
    stop = threading.Event()
    handle = BackgroundLoad(threading.Thread(daemon=True), stop)

    def target() -> None:
        handle.result = run_load(url, seconds=seconds, stop=stop, **options)  # type: ignore[arg-type]

    handle.thread = threading.Thread(target=target, daemon=True, name="loadgen")
    handle.thread.start()
    try:
        yield handle
    finally:
        stop.set()
        handle.thread.join(timeout=30)
