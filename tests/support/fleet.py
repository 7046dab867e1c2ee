"""A fleet of versions of one service as plain processes, scraped by a real Prometheus, under load."""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from agents.observability.metrics import Target
from tests.support.fault_app import fault_app
from tests.support.loadgen import BackgroundLoad, background_load
from tests.support.prometheus import PrometheusServer, prometheus_server


@dataclass
class Fleet:
    """Running versions (name -> port), their Prometheus, and when load started."""

    service: str
    prom: PrometheusServer
    ports: dict[str, int]
    loads: dict[str, BackgroundLoad] = field(default_factory=dict)
    load_started: float = 0.0

    def url(self, version: str) -> str:
        return f"http://127.0.0.1:{self.ports[version]}/"


@contextmanager
def fleet(versions: Mapping[str, Mapping[str, float]], *, service: str = "backend", rate: float = 40.0,
          idle: tuple[str, ...] = (), seconds: float = 240.0) -> Iterator[Fleet]:
    """Start one fault app per version (``faults`` as keyword arguments of fault_app), scrape them all
    every second, and drive ``rate`` requests/s at each version not in ``idle`` for at most ``seconds``."""
    with ExitStack() as stack:
        ports = {v: stack.enter_context(fault_app(v, **faults)) for v, faults in versions.items()}
        targets = [Target(f"127.0.0.1:{p}", service, v) for v, p in ports.items()]
        prom = stack.enter_context(prometheus_server(targets))
        prom.wait_scraped(targets)
        result = Fleet(service, prom, ports, load_started=time.time())
        for version in ports:
            if version not in idle:
                result.loads[version] = stack.enter_context(
                    background_load(result.url(version), seconds=seconds, rate=rate, concurrency=4))
        yield result
