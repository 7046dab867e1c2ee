"""Demo traffic: bounded background requests to a run's services, so canary analysis and the watch have data.

An environment whose configuration sets ``demo_traffic`` (``{rps, path}``, orchestra/config/demo_traffic.py)
gets, while a run deploys there and while it watches what it released, ``rps`` GET requests a second to
``path`` on each of the run's services, through the service's nginx edge. The edge's address comes from
the live state and is always checked to be 127.0.0.1 or ::1 (agents/observability/load.py refuses anything
else), so nothing here can send a request off this machine.

The traffic stops when the deploy stage ends (the ``with`` block), after ``MAX_SECONDS`` whatever
happens, and, while watching, for a service whose release was replaced or stopped (its live state no
longer shows the version this run released).

A watch holds no worker (it is a series of scheduled checks), so its traffic is driven by a long-lived
process instead: :class:`WatchTraffic`, which the router syncs with the watches in progress on each tick.
One router drives a watch's traffic at a time (a short owner lease), so several routers do not multiply it.
A paced canary (agents/deploy/paced.py) holds no worker either: while its deploy pauses between scheduled
checks, the pause records what to send (:func:`pace`, a key that expires soon after the next check is due)
and the same router keeps that traffic going to the services' edges until the run's deploy stage concludes.
"""
from __future__ import annotations

import json
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
from agents.observability.watch import load_state
from orchestra.config.demo_traffic import DemoTraffic
from orchestra.events import as_text

logger = logging.getLogger(__name__)

MAX_SECONDS = 3600.0  # a stage that runs longer than this gets no more traffic
CHUNK_S = 2.0  # the edge's live state is looked at again this often
CONCURRENCY = 2  # per service: a slow release still gets most of its rate
DRIVER_KEY = "orchestra:watch-traffic:{run_id}"
DRIVER_LEASE_S = 10
PACED_KEY = "orchestra:paced-traffic:{run_id}"  # JSON {env, services, demo}: a paced canary's pause
PACED_MARGIN_S = 60  # the record outlives the next check by this much (each pause writes it again)


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
def demo_traffic(ctx: AgentContext) -> Iterator[Traffic | None]:
    """Traffic for the ``with`` block to the run's services, when the run's environment asks for it (else None)."""
    spec = ctx.config.environment(ctx.run.env).demo_traffic
    if spec is None:
        yield None
        return
    traffic = Traffic(ctx.redis, ctx.run.env, list(ctx.run.services or ctx.config.service_names()), spec).start()
    try:
        yield traffic
    finally:
        traffic.close()
        logger.info("demo traffic in %s: %s (answers by status: %s)", ctx.run.env,
                    ", ".join(f"{s} {u}" for s, u in traffic.urls.items()) or "no edge was up",
                    dict(traffic.statuses))


class WatchTraffic:
    """Demo traffic for the releases being watched, kept running by a long-lived process between looks."""

    def __init__(self, redis: Redis, name: str) -> None:
        self.redis = redis
        self.name = name
        self.running: dict[str, Traffic] = {}

    def sync(self, run_ids: list[str], deploying: list[str] = []) -> None:  # noqa: B006 (never mutated)
        """Drive the traffic of the watches of ``run_ids`` and of the paused canaries of ``deploying`` that ask
        for it; stop what is no longer watched or deploying."""
        wanted = {run_id for run_id in run_ids if self._drives(run_id)}
        wanted |= {f"deploy:{run_id}" for run_id in deploying if self._drives_paced(run_id)}
        for run_id in set(self.running) - wanted:
            self.running.pop(run_id).close()

    def close(self) -> None:
        self.sync([])

    def _drives(self, run_id: str) -> bool:
        state = load_state(self.redis, run_id)
        if state is None or state.demo is None or not self._leased(run_id):
            return False
        if run_id not in self.running:
            released = {rel.service: rel.version for rel in state.watched()}
            self.running[run_id] = Traffic(self.redis, state.watched()[0].env, list(released),
                                           DemoTraffic.model_validate(state.demo), released,
                                           max_seconds=max(state.deadline - time.time(), 0) + CHUNK_S).start()
        return True

    def _drives_paced(self, run_id: str) -> bool:
        raw = self.redis.get(PACED_KEY.format(run_id=run_id))
        if raw is None or not self._leased(run_id):
            return False
        key = f"deploy:{run_id}"
        if key not in self.running:
            paced = json.loads(raw)
            self.running[key] = Traffic(self.redis, paced["env"], list(paced["services"]),
                                        DemoTraffic.model_validate(paced["demo"])).start()
        return True

    def _leased(self, run_id: str) -> bool:
        key = DRIVER_KEY.format(run_id=run_id)
        if self.redis.set(key, self.name, nx=True, ex=DRIVER_LEASE_S):
            return True
        if as_text(self.redis.get(key) or b"") != self.name:
            return False  # another router drives it
        self.redis.expire(key, DRIVER_LEASE_S)
        return True


def pace(redis: Redis, run_id: str, env: str, services: list[str], spec: DemoTraffic, *, after_s: float) -> None:
    """Have the router drive ``spec``'s traffic to ``services`` in ``env`` while the run's canary pauses
    (the record lasts until ``after_s`` plus a margin; the router stops once the deploy stage concludes)."""
    record = {"env": env, "services": services, "demo": spec.model_dump(mode="json")}
    redis.set(PACED_KEY.format(run_id=run_id), json.dumps(record), ex=int(after_s + PACED_MARGIN_S))
