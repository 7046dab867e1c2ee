"""Reading service metrics from Prometheus: its HTTP API, and the PromQL for each judged metric.

Services expose ``http_requests_total{version,status,path}``,
``http_request_duration_seconds`` (a histogram with a ``version`` label) and the
process collector's CPU and memory. Scrape targets carry ``service``, ``env``
and ``version`` labels (see :func:`file_sd_entries`), so every metric can be
selected per service and version.
"""
from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestra.errors import OrchestraError

logger = logging.getLogger(__name__)

REQUESTS = "http_requests_total"
DURATION_BUCKETS = "http_request_duration_seconds_bucket"
CPU_SECONDS = "process_cpu_seconds_total"
RESIDENT_MEMORY = "process_resident_memory_bytes"
DEFAULT_RATE_WINDOW = "5s"


class MetricsError(OrchestraError):
    """Prometheus could not be reached or refused a query."""


@dataclass(frozen=True)
class Series:
    """One time series: its labels and its (timestamp, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points if math.isfinite(v)]


class Prometheus:
    """A small client for Prometheus's HTTP API (instant and range queries)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str, *, at: float | None = None) -> list[Series]:
        """An instant query; each series has one point."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            ts, value = data["result"]
            return [Series({}, [(float(ts), float(value))])]
        return [Series(r["metric"], [(float(r["value"][0]), float(r["value"][1]))]) for r in data["result"]]

    def query_range(self, promql: str, *, start: float, end: float, step: float = 1.0) -> list[Series]:
        """A range query from ``start`` to ``end`` (unix seconds) every ``step`` seconds."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data = self._get("/api/v1/query_range", params)
        return [Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    def value(self, promql: str, *, at: float | None = None) -> float | None:
        """The single value of an instant query, or None when it has no (finite) result."""
        series = self.query(promql, at=at)
        values = [v for s in series for v in s.values]
        return values[0] if values else None

    def ready(self) -> bool:
        """True when Prometheus answers its readiness endpoint."""
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=self.timeout) as resp:  # noqa: S310
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 (configured URL)
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            raise MetricsError(f"Prometheus refused the query {params['query']!r}: {detail}",
                               hint="check the PromQL and the metric names the service exports") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MetricsError(f"cannot reach Prometheus at {self.url}: {exc}",
                               hint="start it, or set ORCHESTRA_PROMETHEUS_URL to where it listens") from exc
        if body.get("status") != "success":
            raise MetricsError(f"Prometheus query failed: {body.get('error', body)}")
        return body["data"]


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(exc).get("error", exc.reason))
    except (ValueError, OSError):
        return str(exc.reason)


@dataclass(frozen=True)
class Selector:
    """Which series: one service (and environment), one version."""

    service: str
    version: str
    env: str | None = None

    def matchers(self, *extra: str) -> str:
        parts = [f'service="{_quote(self.service)}"', f'version="{_quote(self.version)}"']
        if self.env:
            parts.append(f'env="{_quote(self.env)}"')
        return "{" + ",".join([*parts, *extra]) + "}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def request_rate(sel: Selector, window: str = DEFAULT_RATE_WINDOW) -> str:
    return f"sum(rate({REQUESTS}{sel.matchers()}[{window}]))"


def error_rate(sel: Selector, window: str = DEFAULT_RATE_WINDOW) -> str:
    """Share of 5xx responses; 0 (not missing) when there were requests and no errors."""
    server_errors = sel.matchers('status=~"5.."')
    errors = f"sum(rate({REQUESTS}{server_errors}[{window}]))"
    return f"(({errors}) or vector(0)) / {request_rate(sel, window)}"


def latency_quantile(sel: Selector, quantile: float = 0.99, window: str = DEFAULT_RATE_WINDOW) -> str:
    return (f"histogram_quantile({quantile:g}, sum by (le) "
            f"(rate({DURATION_BUCKETS}{sel.matchers()}[{window}])))")


def cpu_percent(sel: Selector, window: str = DEFAULT_RATE_WINDOW) -> str:
    return f"sum(rate({CPU_SECONDS}{sel.matchers()}[{window}])) * 100"


def memory_bytes(sel: Selector) -> str:
    return f"sum({RESIDENT_MEMORY}{sel.matchers()})"


def memory_growth(sel: Selector, window: str = "15s") -> str:
    """Bytes per second the resident memory grows by (a leak is a steady positive slope)."""
    return f"sum(deriv({RESIDENT_MEMORY}{sel.matchers()}[{window}]))"


def requests_served(sel: Selector, seconds: float) -> str:
    """How many requests the version served in the last ``seconds``."""
    return f"sum(increase({REQUESTS}{sel.matchers()}[{max(1, round(seconds))}s]))"


def metric_queries(sel: Selector, window: str = DEFAULT_RATE_WINDOW) -> dict[str, str]:
    """The PromQL of every metric the judge knows, by its name."""
    return {
        "error_rate": error_rate(sel, window),
        "latency_p50": latency_quantile(sel, 0.5, window),
        "latency_p99": latency_quantile(sel, 0.99, window),
        "cpu": cpu_percent(sel, window),
        "memory": memory_bytes(sel),
        "memory_growth": memory_growth(sel),
        "request_rate": request_rate(sel, window),
    }


def collect(prom: Prometheus, sel: Selector, names: Iterable[str], *, start: float, end: float,
            step: float = 1.0, window: str = DEFAULT_RATE_WINDOW) -> dict[str, list[float]]:
    """Samples of each named metric for one version over [start, end]."""
    queries = metric_queries(sel, window)
    out: dict[str, list[float]] = {}
    for name in names:
        if name not in queries:
            raise MetricsError(f"unknown metric {name!r}", hint=f"use one of {', '.join(sorted(queries))}")
        series = prom.query_range(queries[name], start=start, end=end, step=step)
        out[name] = [v for s in series for v in s.values]
    return out


@dataclass(frozen=True)
class Target:
    """One scrape target: a process serving /metrics for a version of a service."""

    address: str  # host:port
    service: str
    version: str
    env: str = "staging"
    metrics_path: str = "/metrics"


def file_sd_entries(targets: Iterable[Target]) -> list[dict[str, object]]:
    """Prometheus file_sd entries for ``targets`` (one group per target)."""
    return [{"targets": [t.address],
             "labels": {"service": t.service, "version": t.version, "env": t.env,
                        "__metrics_path__": t.metrics_path}} for t in targets]


def write_targets(path: Path, targets: Iterable[Target]) -> None:
    """Atomically replace a file_sd targets file; Prometheus notices within seconds."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(file_sd_entries(targets), indent=1))
    tmp.replace(path)


def scrape_config(targets_file: Path, *, interval: str = "1s") -> str:
    """A Prometheus config that scrapes the targets listed in ``targets_file`` (file_sd)."""
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: orchestra-services\n"
        "    honor_labels: true\n"
        f"    scrape_timeout: {interval}\n"
        "    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(targets_file))}]\n"
        "        refresh_interval: 1s\n"
    )
