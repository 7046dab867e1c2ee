"""Telemetry: the metrics each process serves to the people who run it.

``metrics_registry`` builds one registry per process (tests build several). Its collector reads
Redis at scrape time: runs, stage durations and LLM usage folded from the event stream (from where
the last scrape stopped), the stage queue, and the consumer groups' lag. Those describe the whole
installation, so every process shows the same values. Stage jobs run in RQ's forked work horses,
whose in-memory counts would die with them: one more reason to count from the events.

Only the Slack and GitHub API calls are counted in the process (``SLACK_CALLS``, ``GITHUB_CALLS``),
where each client sends them. Log lines are set up in :mod:`orchestra.logs`.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError, ResponseError

from orchestra import health
from orchestra.events import EVENTS_STREAM, Event, EventType, as_fields, as_text
from orchestra.store import RUN_KEY, rejected_counts

if TYPE_CHECKING:
    from rq import Queue

logger = logging.getLogger(__name__)

STAGE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
READ_BATCH = 1000
# Process-wide on purpose: counted where the clients call out, exposed by every registry built here.
SLACK_CALLS = Counter("orchestra_slack_api_calls", "Slack Web API requests made by this process (each attempt)",
                      ["method", "status"], registry=None)
GITHUB_CALLS = Counter("orchestra_github_api_calls", "GitHub REST API requests made by this process (each attempt)",
                       ["status"], registry=None)


def metrics_registry(redis: Redis, *, queue: Queue | None = None) -> CollectorRegistry:
    """A registry of this process's metrics: Redis read at scrape time, and its own API calls."""
    registry = CollectorRegistry()
    registry.register(RedisCollector(redis, queue=queue))
    registry.register(SLACK_CALLS)
    registry.register(GITHUB_CALLS)
    return registry


def serve_metrics(registry: CollectorRegistry, port: int, *, host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` and ``/healthz`` from a daemon thread; on a free port (logged) when ``port`` is taken."""
    app = health.wsgi_app(make_wsgi_app(registry))
    try:
        server = _serve(app, host, port)
    except OSError as exc:
        server = _serve(app, host, 0)
        logger.warning("metrics port %s unavailable (%s); using %s instead", port, exc.strerror, server.server_port)
    logger.info("serving metrics on http://%s:%s/metrics (health at /healthz)", host, server.server_port)
    return int(server.server_port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def _serve(app: Any, host: str, port: int) -> WSGIServer:
    server = make_server(host, port, app, _IPv6Server if ":" in host else _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class EventTotals:
    """Counts folded from the event stream, one event at a time, in stream order."""

    def __init__(self) -> None:
        self.cursor = "0-0"
        self.runs: Tally[tuple[str, str]] = Tally()  # (kind, outcome)
        self.tokens: Tally[tuple[str, str]] = Tally()  # (direction, model)
        self.cost: defaultdict[str, float] = defaultdict(float)  # model
        self.stages: dict[tuple[str, str], list[float]] = {}  # (stage, result) -> bucket counts + [sum]
        self.started: dict[tuple[str, str], float] = {}  # (run, stage) -> first stage_started

    def add(self, event: Event, kind: str) -> None:
        data = event.data
        if event.type == EventType.STAGE_STARTED:
            self.started.setdefault((event.run_id, str(data.get("stage"))), event.ts)  # retries count in
        elif event.type == EventType.STAGE_FAILED or ("passed" in data and "stage" in data):
            result = "error" if event.type == EventType.STAGE_FAILED else ("passed" if data["passed"] else "failed")
            began = self.started.pop((event.run_id, str(data.get("stage"))), None)
            if began is not None:
                self._observe(str(data["stage"]), result, max(0.0, event.ts - began))
        if event.type == EventType.RUN_FINISHED:
            self.runs[(kind, str(data.get("status", "unknown")))] += 1
            self.started = {k: v for k, v in self.started.items() if k[0] != event.run_id}
        elif event.type == EventType.LLM_CALL and data.get("outcome") == "ok":
            model = str(data.get("model", "unknown"))
            self.tokens[("input", model)] += int(data.get("input_tokens") or 0)
            self.tokens[("output", model)] += int(data.get("output_tokens") or 0)
            self.cost[model] += float(data.get("cost_usd") or 0.0)

    def _observe(self, stage: str, result: str, seconds: float) -> None:
        counts = self.stages.setdefault((stage, result), [0.0] * (len(STAGE_BUCKETS) + 2))
        counts[next((i for i, le in enumerate(STAGE_BUCKETS) if seconds <= le), len(STAGE_BUCKETS))] += 1
        counts[-1] += seconds

    def metrics(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("orchestra_runs_finished", "Runs finished, by kind and outcome",
                                   labels=["kind", "outcome"])
        for labels, count in sorted(self.runs.items()):
            runs.add_metric(labels, count)
        durations = HistogramMetricFamily("orchestra_stage_duration_seconds", "From stage_started to the stage's "
                                          "result (passed, failed) or stage_failed (error)", labels=["stage", "result"])
        for labels, counts in sorted(self.stages.items()):
            cumulative = [sum(counts[:i + 1]) for i in range(len(STAGE_BUCKETS) + 1)]
            buckets = [(str(le), n) for le, n in zip(STAGE_BUCKETS, cumulative, strict=False)]
            durations.add_metric(labels, [*buckets, ("+Inf", cumulative[-1])], sum_value=counts[-1])
        tokens = CounterMetricFamily("orchestra_llm_tokens", "LLM tokens, by direction (input, output) and model",
                                     labels=["direction", "model"])
        for labels, count in sorted(self.tokens.items()):
            tokens.add_metric(labels, count)
        cost = CounterMetricFamily("orchestra_llm_cost_usd", "LLM cost in US dollars, by model", labels=["model"])
        for model, usd in sorted(self.cost.items()):
            cost.add_metric([model], usd)
        yield from (runs, durations, tokens, cost)


class RedisCollector(Collector):
    """Reads the installation's state from Redis when scraped; safe to scrape from several threads."""

    def __init__(self, redis: Redis, *, queue: Queue | None = None, stream: str = EVENTS_STREAM) -> None:
        self.redis = redis
        self.queue = queue
        self.stream = stream
        self.totals = EventTotals()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                self._read_events()
                live, up = [*self._queue(), *self._lag(), self._rejected()], 1
            except RedisError as exc:  # still show what was counted; the gauge says Redis did not answer
                logger.warning("metrics: Redis did not answer: %s", exc)
                live, up = [], 0
            totals = list(self.totals.metrics())
        yield from totals
        yield from live
        yield GaugeMetricFamily("orchestra_redis_up", "1 when Redis answered this scrape", value=up)

    def _read_events(self) -> None:
        """Fold the entries added since the last scrape (all of the stream on the first)."""
        while True:
            entries: Any = self.redis.xrange(self.stream, min=f"({self.totals.cursor}", count=READ_BATCH)
            events = list(_events(entries))
            kinds = self._kinds({e.run_id for e in events if e.type == EventType.RUN_FINISHED})
            for event in events:
                self.totals.add(event, kinds.get(event.run_id, "unknown"))
            if entries:
                self.totals.cursor = as_text(entries[-1][0])
            if len(entries) < READ_BATCH:
                return

    def _kinds(self, run_ids: set[str]) -> dict[str, str]:
        """Each run's kind (deploy, rollback, validate), from its record."""
        ordered = sorted(run_ids)
        pipe = self.redis.pipeline(transaction=False)
        for run_id in ordered:
            pipe.get(RUN_KEY.format(run_id=run_id))
        records = pipe.execute() if ordered else []
        return {run_id: str(json.loads(raw).get("kind", "unknown")) for run_id, raw in zip(ordered, records,
                                                                                           strict=True) if raw}

    def _queue(self) -> Iterator[Metric]:
        if self.queue is None:
            return
        yield GaugeMetricFamily("orchestra_queue_depth", "Stage jobs waiting in the queue", value=self.queue.count)
        oldest = next(iter(self.queue.get_job_ids(0, 1)), None)
        job = self.queue.fetch_job(oldest) if oldest else None
        age = time.time() - _epoch(job.enqueued_at) if job is not None and job.enqueued_at else 0.0
        yield GaugeMetricFamily("orchestra_queue_oldest_age_seconds", "How long the oldest waiting stage job has "
                                "waited", value=max(0.0, age))

    def _rejected(self) -> Metric:
        rejected = CounterMetricFamily("orchestra_events_rejected", "Events the router refused to act on (forged "
                                       "approvals, results from a job that does not own the stage)",
                                       labels=["type"])
        for kind, count in sorted(rejected_counts(self.redis).items()):
            rejected.add_metric([kind], count)
        return rejected

    def _lag(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("orchestra_stream_lag", f"Entries of {self.stream} a consumer group has not read yet",
                                labels=["group"])
        pending = GaugeMetricFamily("orchestra_stream_pending", "Entries a consumer group read but did not "
                                    "acknowledge yet", labels=["group"])
        try:
            groups: Any = self.redis.xinfo_groups(self.stream)
        except ResponseError:  # no stream yet: nobody is behind
            groups = []
        for group in groups:
            name = as_text(group["name"])
            if group.get("lag") is not None:  # Redis cannot tell after entries were deleted from the middle
                lag.add_metric([name], int(group["lag"]))
            pending.add_metric([name], int(group.get("pending") or 0))
        yield from (lag, pending)


def _events(entries: Iterable[Any]) -> Iterator[Event]:
    for entry_id, fields in entries:
        try:
            yield Event.from_entry(as_text(entry_id), as_fields(fields))
        except (KeyError, ValueError, ValidationError):  # a stranger on the stream: not ours to count
            continue


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
