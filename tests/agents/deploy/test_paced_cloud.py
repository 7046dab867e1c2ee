"""Paced canaries and intents before start on the Lambda target (boto3 against a real moto_server on loopback),
and what the Kubernetes and ECS files share (test_paced_cloud_kubernetes.py, test_paced_cloud_ecs.py).

A paced deploy job returns after the canary's first weight (``later_s``, no sleep in the job); each scheduled
check (``agents.deploy.stage.check``, what ``jobs.tasks.deploy_check`` runs) judges the step and moves the
alias's weights on, read back through boto3; a failing verdict puts the alias back on the old version. A
worker SIGKILLed after the new version is published and before the alias moves leaves its intent, and the
reconciler (``agents.deploy.reconcile.run``, the job the router's reaper enqueues) puts the alias back.
moto stores versions and alias weights but invokes nothing: tests/support/moto.py's Invocations plays the
callers and CloudWatch's counts.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext, StageResult
from agents.deploy import intent, reconcile
from agents.deploy import stage as deploy
from agents.deploy.strategies import Judge
from agents.deploy.targets.state import get_live
from orchestra.config import load_config
from orchestra.events import Event, EventBus, EventType
from orchestra.locks import Locks, request_cancel
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.moto import Invocations, aws_env, client, lambda_function, moto_server, reset

ENV = "staging"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-web"
IMAGES = {v: {"image": f"{ECR}:{v}", "version": v} for v in ("v1", "v2")}
FUNCTION = "web-staging"


# -- shared by the three targets' files ---------------------------------------------------------------

class DiesWhenHealthy(EventBus):
    """The bus of a worker that is SIGKILLed the moment its deploy reports the new release healthy: after
    the release was created, before any traffic moved."""

    def emit(self, run_id: str, type: EventType, actor: str, **data: Any) -> Event:
        if data.get("phase") == "healthy":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().emit(run_id, type, actor, **data)


class DiesAfterItsIntent(Redis):
    """The Redis client of a worker that is SIGKILLed the moment its deploy has written its starting intent:
    before any call to the platform."""

    def eval(self, script: str, numkeys: int, *args: Any) -> Any:  # type: ignore[override]
        answer = super().eval(script, numkeys, *args)
        if script == intent._WRITE and any(f'"phase":"{intent.STARTING}"' in str(a) for a in args):
            os.kill(os.getpid(), signal.SIGKILL)
        return answer


def admitted(repo: Path, settings: Settings, redis: Redis, image: dict[str, str] | None = None,
             bus: EventBus | None = None, run: Run | None = None, admit: bool = True) -> AgentContext:
    """A run of ``web`` holding its lock since admission (as dispatch admits it; else the deploy takes it
    for the moment), its image built."""
    if run is None:
        run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env=ENV)
        if admit:
            run = run.model_copy(update={"fence": Locks(redis).admit(run, ttl_s=120).fence})
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=bus or EventBus(redis), workspace=repo,
                       config=load_config(repo), actor="deploy")
    if image is not None:
        ctx.emit(EventType.BUILD_READY, passed=True, images={"web": image})
    return ctx


def checks(ctx: AgentContext, paused: StageResult, read: Callable[[], Any], *,
           judge: Judge | None = None, limit: int = 12) -> tuple[StageResult, list[Any]]:
    """The scheduled checks after a paced deploy job, each fired when the last one asked (what was read
    after each); the stage's last result."""
    result, seen = paused, []
    for _ in range(limit):
        if result.later_s is None:
            return result, seen
        time.sleep(result.later_s)
        result = deploy.check(ctx, judge=judge)
        seen.append(read())
    raise AssertionError(f"the canary was still pausing after {limit} checks: {result.summary}")


def killed_when_healthy(repo: Path, settings: Settings, redis: Redis, image: dict[str, str], *,
                        at_once: bool = False) -> AgentContext:
    """Deploy ``image`` in a forked worker that is SIGKILLed once the new release is healthy (``at_once``:
    once its starting intent is written, before any call to the platform); the run's context."""
    ctx = admitted(repo, settings, redis, image)
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            if at_once:
                dies = DiesAfterItsIntent.from_url(settings.redis_url)
                deploy.run(admitted(repo, settings, dies, bus=EventBus(dies), run=ctx.run))
            deploy.run(admitted(repo, settings, redis, bus=DiesWhenHealthy(redis), run=ctx.run))
        finally:
            os._exit(3)  # never reached when it was killed at the moment
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    left = intent.get(redis, "web", ENV)
    assert left is not None and left.phase == intent.STARTING and left.run_id == ctx.run.id
    return ctx


def reconciled(ctx: AgentContext) -> StageResult:
    """The reconcile job of the killed run: it fails the stage saying what it put back; no intent is left."""
    result = reconcile.run(ctx)
    assert not result.passed and result.data["reconciled"] == ["web"] and not result.data["problems"], result
    assert intent.get(ctx.redis, "web", ENV) is None and not intent.everywhere(ctx.redis)
    return result


# -- Lambda -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str) -> Iterator[str]:
    reset(moto_url)
    with aws_env(moto_url):
        yield moto_url


def _config(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text("""
project: {name: shop}
rollback: {threshold: {error_rate: 5%}}
deployment:
  strategy: canary
  canary: {steps: [10, 50, 100], analysis_interval: 1s}
  services:
    - {name: web, runtime: lambda}
environments:
  staging:
    lambda: {region: us-east-1, alias: live, update_timeout: 5s}
""")
    return repo


def _alias(url: str) -> tuple[str, dict[str, float]]:
    found = client(url, "lambda").get_alias(FunctionName=FUNCTION, Name="live")
    return found["FunctionVersion"], (found.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def _v1_live(aws: str, tmp_path: Path, settings: Settings, redis: Redis) -> Path:
    lambda_function(aws, FUNCTION)
    repo = _config(tmp_path)
    assert deploy.run(admitted(repo, settings, redis, IMAGES["v1"], admit=False)).passed
    assert _alias(aws) == ("1", {})
    return repo


def test_a_lambda_canary_returns_after_its_first_weight_and_its_checks_move_the_alias_on(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    calls = Invocations(aws, FUNCTION).start()
    try:
        ctx = admitted(repo, settings, redis, IMAGES["v2"])
        started = time.monotonic()
        first = deploy.run(ctx, pace=True)
        took = time.monotonic() - started
        assert first.passed and first.later_s is not None and first.data["weight"] == 10, first.summary
        assert took < 1.0  # the job did not wait out the 1 s pause
        assert _alias(aws) == ("1", {"2": 0.1})
        result, seen = checks(ctx, first, lambda: _alias(aws))
    finally:
        calls.stop()
    assert result.passed, result.summary
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == [("1", {"2": 0.5}), ("2", {})]
    assert result.data["verdicts"]["web"] == [{"step": 1, "weight": 10, "verdict": "pass"},
                                              {"step": 2, "weight": 50, "verdict": "pass"}]
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.container == f"{FUNCTION}:2"
    assert intent.get(redis, "web", ENV) is None


def test_a_failing_verdict_in_a_lambda_check_puts_the_alias_back_on_the_old_version(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    ctx = admitted(repo, settings, redis, IMAGES["v2"])
    first = deploy.run(ctx, pace=True)
    assert first.later_s is not None and _alias(aws) == ("1", {"2": 0.1})
    result, seen = checks(ctx, first, lambda: _alias(aws), judge=lambda step: "fail")
    assert not result.passed and "judged fail" in result.summary, result.summary
    assert seen == [("1", {})]
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.version == "v1"
    assert live.weights == {"v1": 100} and intent.get(redis, "web", ENV) is None


@pytest.mark.parametrize("at_once", [False, True], ids=["published", "right-after-its-intent"])
def test_a_worker_killed_after_publishing_before_the_alias_moves_is_reconciled(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis, at_once: bool) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    ctx = killed_when_healthy(repo, settings, redis, IMAGES["v2"], at_once=at_once)
    versions = client(aws, "lambda").list_versions_by_function(FunctionName=FUNCTION)["Versions"]
    # published, never given traffic (nothing when it was killed before its first call to Lambda)
    assert [v["Version"] for v in versions] == ["$LATEST", "1"] + ([] if at_once else ["2"])
    assert _alias(aws) == ("1", {})
    result = reconciled(ctx)
    assert "traffic stays on v1" in result.summary, result.summary
    assert _alias(aws) == ("1", {})
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.version == "v1"


def test_a_first_release_killed_before_its_alias_exists_is_taken_down_cleanly(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    lambda_function(aws, FUNCTION)
    ctx = killed_when_healthy(_config(tmp_path), settings, redis, IMAGES["v1"])
    result = reconciled(ctx)
    assert "had no earlier release" in result.summary, result.summary
    assert get_live(redis, "web", ENV) is None
    functions = client(aws, "lambda")
    with pytest.raises(functions.exceptions.ResourceNotFoundException):
        functions.get_alias(FunctionName=FUNCTION, Name="live")


def test_a_cancel_in_a_lambda_pause_puts_the_alias_back_at_the_next_check_without_judging(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    ctx = admitted(repo, settings, redis, IMAGES["v2"])
    first = deploy.run(ctx, pace=True)
    assert first.later_s is not None and _alias(aws) == ("1", {"2": 0.1})
    request_cancel(redis, ctx.run.id, "U0BOB")
    asked: list[int] = []
    result = deploy.check(ctx, judge=lambda step: str(asked.append(step.step)) and "pass")
    assert not result.passed and "cancel" in result.summary, result.summary
    assert asked == [] and _alias(aws) == ("1", {})  # stopped before any judging, the alias on version 1 alone
    live = get_live(redis, "web", ENV)
    assert live is not None and live.weights == {"v1": 100} and intent.get(redis, "web", ENV) is None
