"""Paced canaries and intents before start on the ECS target (boto3 against a real moto_server on loopback).

The deploy job returns after the listener's first weight; the scheduled checks judge each step on CloudWatch
and move the listener's weights on (read back through boto3); a failing verdict puts them back and scales the
new colour to 0. A worker SIGKILLed after the new colour's service is healthy and before the listener moves
is reconciled: the new colour scaled to 0, the listener on the old one. tests/support/moto.py plays the ECS
agent (healthy targets) and the ALB (CloudWatch counts by the listener's weights).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.deploy import intent
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from orchestra.locks import Locks
from orchestra.settings import Settings
from orchestra.store import Run
from tests.agents.deploy.targets.test_ecs import _desired, _weights
from tests.agents.deploy.test_paced_cloud import ENV, admitted, checks, killed_when_healthy, reconciled
from tests.support.moto import Alb, Ecs, Platform, aws_env, moto_server, platform, reset

IMAGES = {v: {"image": f"registry.example/shop-web:{v}", "version": v} for v in ("v1", "v2")}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str) -> Iterator[Platform]:
    reset(moto_url)
    built = platform(moto_url)
    agent = Ecs(moto_url, built.cluster).start()
    with aws_env(moto_url):
        yield built
    agent.stop()


def _v1_live(built: Platform, tmp_path: Path, settings: Settings, redis: Redis) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
rollback: {{threshold: {{error_rate: 5%, latency_ms: 800}}}}
deployment:
  strategy: canary
  canary: {{steps: [25, 50, 100], analysis_interval: 1s}}
  blue_green: {{keep_previous: 1h}}
  services:
    - {{name: web, runtime: ecs, port: 8080, replicas: 2}}
environments:
  staging:
    ecs:
      cluster: {built.cluster}
      region: us-east-1
      listener: {built.listener}
      subnets: [{built.subnet}]
      security_groups: [{built.security_group}]
      execution_role: {built.execution_role}
      rollout_timeout: 3s
""")
    assert deploy.run(admitted(repo, settings, redis, IMAGES["v1"], admit=False)).passed
    assert _weights(built) == {"web-blue": 100, "web-green": 0}
    return repo


def test_an_ecs_canary_returns_after_its_first_weight_and_its_checks_move_the_listener_on(
        tmp_path: Path, aws: Platform, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    alb = Alb(aws.url, aws, requests_per_tick=1000).start()
    try:
        ctx = admitted(repo, settings, redis, IMAGES["v2"])
        first = deploy.run(ctx, pace=True)
        assert first.passed and first.later_s is not None and first.data["weight"] == 25, first.summary
        assert _weights(aws) == {"web-blue": 75, "web-green": 25}
        result, seen = checks(ctx, first, lambda: _weights(aws))
    finally:
        alb.stop()
    assert result.passed, result.summary
    moved = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert moved == [{"web-blue": 50, "web-green": 50}, {"web-blue": 0, "web-green": 100}], seen
    assert result.data["verdicts"]["web"] == [{"step": 1, "weight": 25, "verdict": "pass"},
                                              {"step": 2, "weight": 50, "verdict": "pass"}]
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.container == "web-staging-green"
    assert intent.get(redis, "web", ENV) is None


def test_a_failing_verdict_in_an_ecs_check_puts_the_weights_back_and_scales_the_new_colour_down(
        tmp_path: Path, aws: Platform, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    ctx = admitted(repo, settings, redis, IMAGES["v2"])
    first = deploy.run(ctx, pace=True)
    assert first.later_s is not None and _weights(aws) == {"web-blue": 75, "web-green": 25}
    assert _desired(aws) == {"web-staging-blue": 2, "web-staging-green": 2}
    result, seen = checks(ctx, first, lambda: (_weights(aws), _desired(aws)), judge=lambda step: "fail")
    assert not result.passed and "judged fail" in result.summary, result.summary
    assert seen == [({"web-blue": 100, "web-green": 0}, {"web-staging-blue": 2, "web-staging-green": 0})]
    live = get_live(redis, "web", ENV)
    assert live is not None and live.weights == {"v1": 100} and intent.get(redis, "web", ENV) is None


def test_a_worker_killed_after_the_new_colour_is_healthy_before_the_listener_moves_is_reconciled(
        tmp_path: Path, aws: Platform, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    started = time.monotonic()
    ctx = killed_when_healthy(repo, settings, redis, IMAGES["v2"])
    assert _desired(aws) == {"web-staging-blue": 2, "web-staging-green": 2}  # the orphan the kill left
    assert _weights(aws) == {"web-blue": 100, "web-green": 0}
    result = reconciled(ctx)
    assert "traffic stays on v1" in result.summary, result.summary
    assert _desired(aws) == {"web-staging-blue": 2, "web-staging-green": 0}
    assert _weights(aws) == {"web-blue": 100, "web-green": 0}
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.version == "v1"
    print(f"killed and reconciled in {time.monotonic() - started:.2f}s")


def test_a_worker_killed_right_after_its_intent_before_the_new_colour_exists_is_reconciled(
        tmp_path: Path, aws: Platform, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    ctx = killed_when_healthy(repo, settings, redis, IMAGES["v2"], at_once=True)
    assert _desired(aws) == {"web-staging-blue": 2}  # the green colour's ECS service was never created
    result = reconciled(ctx)  # nothing to scale down: that is not a failure to put back
    assert "traffic stays on v1" in result.summary, result.summary
    assert _desired(aws) == {"web-staging-blue": 2} and _weights(aws) == {"web-blue": 100, "web-green": 0}


def test_the_next_deploy_puts_back_an_interrupted_one_nothing_reconciled_before_starting_its_own(
        tmp_path: Path, aws: Platform, settings: Settings, redis: Redis) -> None:
    repo = _v1_live(aws, tmp_path, settings, redis)
    killed = killed_when_healthy(repo, settings, redis, IMAGES["v2"])
    Locks(redis).hand_on(killed.run, why="its lock expired")  # and no reaper reconciled it
    run = Run(requested_by="U0BOB", repo=str(repo), services=["web"], env=ENV, strategy="blue-green")
    ctx = admitted(repo, settings, redis, IMAGES["v2"], run=run)
    result = deploy.run(ctx)
    assert result.passed, result.summary  # not refused for the intent the killed run left
    put_back = [e.data for e in ctx.bus.replay(ctx.run.id) if e.data.get("phase") == "reconciled"]
    assert [p["interrupted_run"] for p in put_back] == [killed.run.id]
    assert "was put back on v1 first" in put_back[0]["message"]
    assert _weights(aws) == {"web-blue": 0, "web-green": 100}
    assert _desired(aws) == {"web-staging-blue": 2, "web-staging-green": 2}
    assert intent.get(redis, "web", ENV) is None and not intent.everywhere(redis)
