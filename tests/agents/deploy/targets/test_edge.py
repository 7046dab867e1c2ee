"""The nginx edge with real nginx in front of real HTTP servers (no Docker needed)."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from agents.deploy.targets.edge import Backend, Edge
from orchestra.errors import OrchestraError, StageFailed
from tests.support.services import free_port, port_open, wait_for


@pytest.fixture
def backends() -> Iterator[list[int]]:
    """Two HTTP servers on loopback ports."""
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-m", "http.server", str(p), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for port in ports:
            wait_for(partial(port_open, port), what=f"http.server on {port}")
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    edge = Edge(tmp_path / "edge", free_port(), name="web-staging")
    yield edge
    edge.stop()
    assert not edge.running()


def _split(edge: Edge, n: int = 100) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        with urllib.request.urlopen(edge.url + "/", timeout=5) as response:
            seen[response.headers["X-Orchestra-Upstream"].rsplit(":", 1)[1]] += 1
    return seen


def test_weights_split_traffic_exactly_and_zero_is_written_as_down(edge: Edge, backends: list[int]) -> None:
    a, b = backends
    edge.apply([Backend(a, "v1", 100), Backend(b, "v2", 0)])
    assert f"server 127.0.0.1:{b} down;" in edge.conf.read_text()
    assert _split(edge) == Counter({str(a): 100})
    edge.apply([Backend(a, "v1", 90), Backend(b, "v2", 10)])
    assert _split(edge) == Counter({str(a): 90, str(b): 10})
    assert edge.generation() == 2 and edge.serving_generation() == 2


def test_access_log_is_json_with_version_upstream_status_and_timing(edge: Edge, backends: list[int]) -> None:
    edge.apply([Backend(backends[0], "v7", 100)])
    _split(edge, 3)
    # nginx writes a request's log line after the response has gone out
    wait_for(lambda: len(edge.access_log.read_text().splitlines()) >= 3, what="three access-log lines")
    entries = [json.loads(line) for line in edge.access_log.read_text().splitlines()]
    assert len(entries) == 3
    assert entries[0]["version"] == "v7" and entries[0]["upstream_addr"] == f"127.0.0.1:{backends[0]}"
    assert entries[0]["status"] == 200 and isinstance(entries[0]["request_time"], float)


def test_a_config_nginx_rejects_leaves_the_running_one_in_place(edge: Edge, backends: list[int]) -> None:
    edge.apply([Backend(backends[0], "v1", 100)])
    broken = Edge(edge.prefix, edge.port, name=edge.name)
    with pytest.raises(OrchestraError, match="nginx -t failed"):
        broken.apply([Backend(70000, "v2", 100)])  # no such port
    assert edge.serving_generation() == 1
    assert _split(edge, 10) == Counter({str(backends[0]): 10})


def test_no_backend_with_traffic_is_refused(edge: Edge) -> None:
    with pytest.raises(StageFailed, match="no backend"):
        edge.render([Backend(1, "v1", 0)], generation=1)


def test_a_version_that_could_change_the_config_is_refused(edge: Edge) -> None:
    with pytest.raises(StageFailed, match="not a safe name"):
        edge.render([Backend(1, 'v1"; } server { listen 80; #', 100)], generation=1)
