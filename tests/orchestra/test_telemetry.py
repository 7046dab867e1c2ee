"""Metrics read from a real Redis (events, RQ jobs, consumer groups) and log lines that name their run."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agents.context import AgentContext, StageResult
from bot.localslack import Running
from bot.localslack.client import WorkspaceClient
from bot.slack.app import CountCalls, web_client
from jobs.graph import ANALYZE, TEST
from jobs.queue import enqueue_stage, stage_queue
from jobs.runner import execute_stage
from orchestra.errors import OrchestraError
from orchestra.events import Consumer, Event, EventBus, EventType
from orchestra.logs import log_handler, run_context
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStore
from orchestra.telemetry import metrics_registry, serve_metrics
from tests.support.services import free_port
from tests.support.slack_workspace import local_slack

logger = logging.getLogger(__name__)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of the exposition text, parsed back as Prometheus would."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def run(redis: Redis, kind: str) -> str:
    return RunStore(redis).create(Run(kind=kind, requested_by="U0ALICE", repo="/tmp/shop")).id


def publish(bus: EventBus, run_id: str, type: EventType, ts: float, **data: Any) -> None:
    bus.publish(Event(run_id=run_id, type=type, actor="test", data=data, ts=ts))


# -- metrics -------------------------------------------------------------------------------------

def test_runs_stage_durations_and_llm_usage_are_folded_from_the_event_stream(redis: Redis) -> None:
    bus, deploy, validate = EventBus(redis), run(redis, "deploy"), run(redis, "validate")
    publish(bus, deploy, EventType.STAGE_STARTED, 1000.0, stage="analyze")
    publish(bus, deploy, EventType.CODE_ANALYSIS_RESULT, 1003.5, stage="analyze", passed=True, summary="clean")
    publish(bus, deploy, EventType.STAGE_STARTED, 1004.0, stage="test")
    publish(bus, deploy, EventType.STAGE_STARTED, 1010.0, stage="test")  # a retry: timed from the first start
    publish(bus, deploy, EventType.TEST_RESULTS, 1064.0, stage="test", passed=False, summary="2 failed")
    publish(bus, deploy, EventType.LLM_CALL, 1065.0, model="qwen", outcome="ok", input_tokens=120,
            output_tokens=30, cost_usd=0.0015)
    publish(bus, deploy, EventType.LLM_CALL, 1066.0, model="qwen", outcome="skipped", reason="over budget")
    publish(bus, deploy, EventType.RUN_FINISHED, 1067.0, status="failed", stage="test")
    publish(bus, validate, EventType.STAGE_STARTED, 2000.0, stage="analyze")
    publish(bus, validate, EventType.STAGE_FAILED, 2700.0, stage="analyze", reason="worker died")
    publish(bus, validate, EventType.RUN_FINISHED, 2701.0, status="failed", stage="analyze")
    registry = metrics_registry(redis)

    first = scrape(registry)

    assert value(first, "orchestra_runs_finished_total", kind="deploy", outcome="failed") == 1
    assert value(first, "orchestra_runs_finished_total", kind="validate", outcome="failed") == 1
    hist = "orchestra_stage_duration_seconds"
    assert value(first, f"{hist}_sum", stage="analyze", result="passed") == 3.5
    assert value(first, f"{hist}_bucket", stage="analyze", result="passed", le="5.0") == 1
    assert value(first, f"{hist}_bucket", stage="analyze", result="passed", le="1.0") == 0
    assert value(first, f"{hist}_sum", stage="test", result="failed") == 60.0
    assert value(first, f"{hist}_count", stage="analyze", result="error") == 1
    assert value(first, f"{hist}_bucket", stage="analyze", result="error", le="600.0") == 0
    assert value(first, f"{hist}_bucket", stage="analyze", result="error", le="1200.0") == 1
    assert value(first, "orchestra_llm_tokens_total", direction="input", model="qwen") == 120
    assert value(first, "orchestra_llm_tokens_total", direction="output", model="qwen") == 30
    assert value(first, "orchestra_llm_cost_usd_total", model="qwen") == pytest.approx(0.0015)
    assert value(first, "orchestra_redis_up") == 1

    # the next scrape folds only what came since: nothing is counted twice
    later = run(redis, "deploy")
    publish(bus, later, EventType.STAGE_STARTED, 3000.0, stage="analyze")
    publish(bus, later, EventType.CODE_ANALYSIS_RESULT, 3002.0, stage="analyze", passed=True, summary="clean")
    publish(bus, later, EventType.RUN_FINISHED, 3003.0, status="succeeded", stage="analyze")
    publish(bus, "r-20250101-0a0b0c", EventType.RUN_FINISHED, 3004.0, status="cancelled")  # no record left
    second = scrape(registry)
    assert value(second, "orchestra_runs_finished_total", kind="deploy", outcome="failed") == 1
    assert value(second, "orchestra_runs_finished_total", kind="deploy", outcome="succeeded") == 1
    assert value(second, "orchestra_runs_finished_total", kind="unknown", outcome="cancelled") == 1
    assert value(second, f"{hist}_count", stage="analyze", result="passed") == 2
    assert value(second, f"{hist}_sum", stage="analyze", result="passed") == 5.5
    assert value(second, "orchestra_llm_tokens_total", direction="input", model="qwen") == 120


def test_queue_depth_and_the_oldest_jobs_age_are_read_from_rq(redis: Redis) -> None:
    queue = stage_queue(redis)
    registry = metrics_registry(redis, queue=queue)
    empty = scrape(registry)
    assert value(empty, "orchestra_queue_depth") == 0
    assert value(empty, "orchestra_queue_oldest_age_seconds") == 0

    first, second = run(redis, "deploy"), run(redis, "deploy")
    oldest = enqueue_stage(queue, first, ANALYZE, job_id=f"{first}_analyze")
    enqueue_stage(queue, second, TEST, job_id=f"{second}_test")
    oldest.enqueued_at = datetime.fromtimestamp(time.time() - 90, UTC)  # as if it had waited a minute and a half
    oldest.save()

    samples = scrape(registry)
    assert value(samples, "orchestra_queue_depth") == 2
    assert 90 <= (value(samples, "orchestra_queue_oldest_age_seconds") or 0) < 120


def test_stream_lag_and_pending_per_consumer_group(redis: Redis) -> None:
    bus = EventBus(redis)
    router, relay = Consumer(bus, "router", "r1"), Consumer(bus, "relay", "s1")
    for n in range(5):
        bus.emit(run(redis, "deploy"), EventType.PROGRESS, "test", message=f"step {n}")
    taken = router.read(count=2, block_ms=10)
    registry = metrics_registry(redis)

    samples = scrape(registry)
    assert value(samples, "orchestra_stream_lag", group="router") == 3
    assert value(samples, "orchestra_stream_pending", group="router") == 2
    assert value(samples, "orchestra_stream_lag", group="relay") == 5
    assert value(samples, "orchestra_stream_pending", group="relay") == 0

    for delivery in taken:
        router.ack(delivery)
    relay.read(count=100, block_ms=10)
    samples = scrape(registry)
    assert value(samples, "orchestra_stream_pending", group="router") == 0
    assert value(samples, "orchestra_stream_lag", group="relay") == 0
    assert value(samples, "orchestra_stream_pending", group="relay") == 5


def test_a_scrape_without_redis_says_so_instead_of_failing() -> None:
    gone = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    samples = scrape(metrics_registry(gone, queue=stage_queue(gone)))
    assert value(samples, "orchestra_redis_up") == 0
    assert ("orchestra_queue_depth", ()) not in samples


@pytest.fixture
def slack() -> Iterator[tuple[Running, WorkspaceClient]]:
    with local_slack() as pair:
        yield pair


def test_slack_calls_are_counted_by_method_and_status_each_attempt(slack: tuple[Running, WorkspaceClient],
                                                                   redis: Redis, settings: Settings) -> None:
    running, control = slack
    registry, calls = metrics_registry(redis), "orchestra_slack_api_calls_total"
    before = scrape(registry)
    relay_client = WebClient(token="xoxb-local", base_url=running.api_url)
    relay_client.retry_handlers.insert(0, CountCalls())  # as bot.slack.process builds the relay's client
    relay_client.chat_postMessage(channel="#devops-orchestra", text="hello")
    control.fail_next("chat.postMessage", status=429, error="ratelimited", retry_after=1)
    with pytest.raises(SlackApiError):  # the relay's client does not retry: the relay holds the channel
        relay_client.chat_postMessage(channel="#devops-orchestra", text="again")
    replies = web_client(settings.with_(slack_api_url=running.api_url))
    per_request = AsyncWebClient(token="xoxb-local", base_url=replies.base_url,  # what Bolt makes per request
                                 retry_handlers=replies.retry_handlers.copy())
    control.fail_next("chat.postEphemeral", status=429, error="ratelimited", retry_after=1)
    asyncio.run(per_request.chat_postEphemeral(channel="#devops-orchestra", user="U0ALICE", text="hi"))

    after = scrape(registry)

    def delta(method: str, status: str) -> float:
        return (value(after, calls, method=method, status=status) or 0) - \
            (value(before, calls, method=method, status=status) or 0)
    assert delta("chat.postMessage", "200") == 1
    assert delta("chat.postMessage", "429") == 1
    assert delta("chat.postEphemeral", "429") == 1  # retried by the rate-limit handler, and still counted
    assert delta("chat.postEphemeral", "200") == 1


# -- logs ----------------------------------------------------------------------------------------

@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What this module's logger writes, as JSON lines."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_run_and_stage_they_were_logged_in(json_lines: io.StringIO) -> None:
    logger.info("starting up")
    with run_context("r-20250101-abc123", "analyze"):
        logger.info("checking %s files", 3)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("the check broke")
    logger.warning("run r-20250101-def456: approval expired")

    lines = records(json_lines)
    assert [line["message"] for line in lines] == ["starting up", "checking 3 files", "the check broke",
                                                   "run r-20250101-def456: approval expired"]
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    assert "run_id" not in lines[0] and lines[0]["logger"] == __name__
    assert lines[1]["run_id"] == "r-20250101-abc123" and lines[1]["stage"] == "analyze"
    assert lines[2]["level"] == "ERROR" and "RuntimeError: boom" in lines[2]["exc"]
    assert lines[3]["run_id"] == "r-20250101-def456" and "stage" not in lines[3]
    assert datetime.fromisoformat(lines[0]["ts"]).tzinfo is not None


def test_an_agents_lines_name_the_run_and_stage_the_runner_gave_it(json_lines: io.StringIO, redis: Redis,
                                                                   settings: Settings, tmp_path: Path) -> None:
    repo = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", repo, ignore=shutil.ignore_patterns("__pycache__"))
    run_id = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(repo))).id

    def agent(ctx: AgentContext) -> StageResult:
        logger.info("looking at %s", ctx.workspace.name)
        return StageResult(True, "fine")

    execute_stage(run_id, ANALYZE, agent, redis=redis, settings=settings)

    [line] = records(json_lines)
    assert line["message"] == "looking at shop"
    assert line["run_id"] == run_id and line["stage"] == "analyze"


def test_an_unknown_log_format_or_metrics_port_is_refused() -> None:
    assert Settings.from_env({"ORCHESTRA_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(OrchestraError, match="ORCHESTRA_LOG_FORMAT='xml' is not a log format"):
        Settings.from_env({"ORCHESTRA_LOG_FORMAT": "xml"})
    with pytest.raises(OrchestraError, match="is not a port"):
        Settings.from_env({"ORCHESTRA_METRICS_PORT": "metrics"})
    assert Settings.from_env({}).metrics_port == 9464


def test_the_metrics_host_is_where_the_bot_and_workers_listen() -> None:
    assert Settings.from_env({}).metrics_host == "127.0.0.1"
    settings = Settings.from_env({"ORCHESTRA_METRICS_HOST": "127.0.0.2"})  # another loopback address
    port = serve_metrics(CollectorRegistry(), free_port(), host=settings.metrics_host)
    with socket.create_connection(("127.0.0.2", port), timeout=2):
        pass
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
