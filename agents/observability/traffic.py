"""Demo traffic: bounded background requests to a run's services, so canary analysis and the watch have data.

An environment whose configuration sets ``demo_traffic`` (``{rps, path}``, orchestra/config/demo_traffic.py)
gets, while a run deploys there and while it watches what it released, ``rps`` GET requests a second to
``path`` on each of the run's services, through the service's nginx edge. The edge's address comes from
the live state and is always checked to be 127.0.0.1 or ::1 (agents/observability/load.py refuses anything
else), so nothing here can send a request off this machine.

The traffic stops when the stage ends (the ``with`` block), after ``MAX_SECONDS`` whatever happens, and,
while watching, for a service whose release was replaced or stopped (its live state no longer shows
the version this run released).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis import Redis

from agents.context import AgentContext
from agents.deploy.targets.state import get_live
from agents.observability.load import LoadError, check_url, run_load
from orchestra.config.demo_traffic import DemoTraffic

logger = logging.getLogger(__name__)

MAX_SECONDS = 3600.0  # a stage that runs longer than this gets no more traffic
CHUNK_S = 2.0  # the edge's live state is looked at again this often
CONCURRENCY = 2  # per service: a slow release still gets most of its rate


@dataclass
class Traffic:
    """Background traffic to some services of one environment; ``statuses`` counts what they answered."""

    redis: Redis
    env: str
    services: list[str]
    spec: DemoTraffic
    released: dict[str, str] | None = None  # service -> version: stop once the live state shows another
    max_seconds: float = MAX_SECONDS
    stop: threading.Event = field(default_factory=threading.Event)
    statuses: Counter[int] = field(default_factory=Counter)
    urls: dict[str, str] = field(default_factory=dict)  # service -> the URL it got traffic on
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Traffic:
        deadline = time.monotonic() + min(self.max_seconds, MAX_SECONDS)
        for service in self.services:
            thread = threading.Thread(target=self._drive, args=(service, deadline), daemon=True,
                                      name=f"demo-traffic-{service}-{self.env}")
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=CHUNK_S + 10)

    def target(self, service: str) -> str | None:
        """The URL to send ``service``'s traffic to now; "" once it must stop for good; None to wait."""
        state = get_live(self.redis, service, self.env)
        wanted = (self.released or {}).get(service)
        if self.released is not None and (state is None or state.current is None
                                          or state.current.version != wanted):
            return ""  # replaced or stopped: this run's release gets no more traffic
        if state is None:
            return None  # a first release: its edge is not up yet
        url = f"{state.url}{self.spec.path}"
        try:
            check_url(url)
        except LoadError:
            logger.error("demo traffic: refusing %s for %s in %s (not loopback)", url, service, self.env)
            return ""
        return url

    def _drive(self, service: str, deadline: float) -> None:
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            url = self.target(service)
            if url == "":
                return
            if url is None:
                self.stop.wait(min(0.5, left))
                continue
            self.urls[service] = url
            result = run_load(url, seconds=min(CHUNK_S, left), rate=self.spec.rps, concurrency=CONCURRENCY,
                              timeout=5.0, stop=self.stop)
            with self._lock:
                self.statuses.update(result.statuses)


@contextmanager
def demo_traffic(ctx: AgentContext, *, watching: bool = False) -> Iterator[Traffic | None]:
    """Traffic for the ``with`` block when the run's environment asks for it (else None).

    ``watching``: only to the services whose live release is this run's, and only while it stays so.
    """
    spec = ctx.config.environment(ctx.run.env).demo_traffic
    if spec is None:
        yield None
        return
    services = list(ctx.run.services or ctx.config.service_names())
    released = None
    if watching:
        released = {}
        for service in services:
            state = get_live(ctx.redis, service, ctx.run.env)
            if state and state.current and state.run_id == ctx.run.id and state.last_action == "deploy":
                released[service] = state.current.version
        services = list(released)
    traffic = Traffic(ctx.redis, ctx.run.env, services, spec, released).start()
    try:
        yield traffic
    finally:
        traffic.close()
        logger.info("demo traffic in %s: %s (answers by status: %s)", ctx.run.env,
                    ", ".join(f"{s} {u}" for s, u in traffic.urls.items()) or "no edge was up",
                    dict(traffic.statuses))
