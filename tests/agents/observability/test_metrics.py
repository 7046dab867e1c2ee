"""The Prometheus client and PromQL per version against a real Prometheus; the load generator."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agents.observability.metrics import MetricsError, Prometheus, Selector, collect, metric_queries, requests_served
from tests.support.fault_app import fault_app
from tests.support.fleet import Fleet, fleet
from tests.support.loadgen import LoadError, run_load
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair() -> Iterator[Fleet]:
    versions = {"v1": {"base_latency_ms": 10}, "v2": {"base_latency_ms": 10, "latency_ms": 40,
                                                      "error_rate": 0.2, "leak_kb": 32}}
    with fleet(versions, rate=50) as running:
        yield running


def _settled(prom: Prometheus, query: str, *, timeout: float = 20.0) -> float:
    """Wait until ``query`` has a value (rates need a few scrapes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = prom.value(query)
        if value is not None:
            return value
        time.sleep(0.5)
    raise AssertionError(f"no value for {query}")


def test_per_version_error_rate_latency_and_memory(pair: Fleet) -> None:
    prom = pair.prom.client
    deadline = time.monotonic() + 30
    while time.time() - pair.load_started < 12 and time.monotonic() < deadline:
        time.sleep(0.5)
    end = time.time()
    names = ["error_rate", "latency_p50", "latency_p99", "cpu", "memory", "memory_growth", "request_rate"]
    v1 = collect(prom, Selector("backend", "v1"), names, start=end - 6, end=end)
    v2 = collect(prom, Selector("backend", "v2"), names, start=end - 6, end=end)
    mean = {k: sum(v) / len(v) for k, v in v2.items()}
    base = {k: sum(v) / len(v) for k, v in v1.items()}
    assert all(len(v) >= 5 for v in v2.values()), {k: len(v) for k, v in v2.items()}
    assert base["error_rate"] == 0.0 and 0.1 < mean["error_rate"] < 0.3
    # v1 sleeps 8-12 ms (median 10 ms): its p50 lies on either side of 10 ms, never below 8 ms.
    assert 0.008 <= base["latency_p50"] < 0.025 and 0.045 < mean["latency_p50"] < 0.075
    assert mean["latency_p99"] > base["latency_p99"] + 0.03
    assert 40 < mean["request_rate"] < 60 and 40 < base["request_rate"] < 60
    assert mean["memory_growth"] > 500_000 > base["memory_growth"]  # 32 KB x 50/s is ~1.6 MB/s
    assert mean["memory"] > base["memory"] > 5e6 and 0 < base["cpu"] < 100


def test_requests_served_counts_the_window(pair: Fleet) -> None:
    # Run alone, this test comes right after the load starts: let the 5 s window fill first.
    wait_for(lambda: time.time() - pair.load_started >= 8, timeout=30, interval=0.2, what="8 s of load")
    served = _settled(pair.prom.client, requests_served(Selector("backend", "v1"), 5))
    assert 150 < served < 350  # 50 requests/s over 5 s
    assert pair.prom.client.value(requests_served(Selector("backend", "nope"), 5)) is None


def test_instant_query_shapes(pair: Fleet) -> None:
    prom = pair.prom.client
    assert prom.value("1 + 1") == 2.0  # a scalar result
    up = prom.query('up{service="backend"}')
    assert sorted(s.labels["version"] for s in up) == ["v1", "v2"]
    assert set(metric_queries(Selector("backend", "v1"))) >= {"error_rate", "latency_p99", "cpu", "memory"}


def test_label_values_are_quoted() -> None:
    assert Selector('a"b', "v\\1").matchers() == '{service="a\\"b",version="v\\\\1"}'


def test_bad_promql_is_a_clear_error(pair: Fleet) -> None:
    with pytest.raises(MetricsError, match="refused the query"):
        pair.prom.client.query("sum(rate(http_requests_total[5s]")


def test_unreachable_prometheus_says_where_it_looked() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsError, match=f"cannot reach Prometheus at {url}") as info:
        Prometheus(url, timeout=1).query("up")
    assert "ORCHESTRA_PROMETHEUS_URL" in str(info.value)
    assert Prometheus(url, timeout=1).ready() is False


def test_unknown_metric_name_is_refused(pair: Fleet) -> None:
    with pytest.raises(MetricsError, match="unknown metric 'errors'"):
        collect(pair.prom.client, Selector("backend", "v1"), ["errors"], start=0, end=1)


def test_loadgen_is_bounded_and_counts_statuses() -> None:
    with fault_app("v9", error_rate=0.5, base_latency_ms=1) as port:
        result = run_load(f"http://127.0.0.1:{port}/", requests=200, concurrency=4)
        assert result.total == 200 and result.versions == {"v9": 200}
        assert 50 < result.statuses[500] < 150 and result.statuses[500] + result.statuses[200] == 200
        paced = run_load(f"http://127.0.0.1:{port}/", seconds=1.0, rate=40, concurrency=2)
        # The pacer hands out slots 25 ms apart before the 1 s deadline: 40 (41 with float rounding)
        # at most. A stall skips slots by design rather than bursting to catch up, so the floor is
        # only one a broken pacer would miss.
        assert 20 <= paced.total <= 41 and 0.9 < paced.seconds < 2.0
    dead = run_load(f"http://127.0.0.1:{free_port()}/", requests=3, concurrency=1)
    assert dead.statuses == {0: 3} and dead.failed == 3


@pytest.mark.parametrize(("url", "kwargs", "message"), [
    ("http://10.0.0.1/", {"requests": 1}, "refusing to load"),
    ("https://127.0.0.1/", {"requests": 1}, "refusing to load"),
    ("http://127.0.0.1:1/", {}, "unbounded load"),
    ("http://127.0.0.1:1/", {"requests": 1, "concurrency": 0}, "out of range"),
])
def test_loadgen_refuses_what_it_should(url: str, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(LoadError, match=message):
        run_load(url, **kwargs)  # type: ignore[arg-type]
