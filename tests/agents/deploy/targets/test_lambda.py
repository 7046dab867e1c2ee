"""The Lambda target end to end through boto3 against a real moto_server on loopback.

moto stores functions, published versions and alias weights but invokes nothing here:
tests/support/moto.py's :class:`Invocations` plays the callers and Lambda's metrics (Invocations and
Errors per executed version, by the alias's weights) through the CloudWatch API. Nothing here ran
against AWS itself.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from orchestra.config import load_config
from orchestra.errors import ConfigError
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.moto import Invocations, aws_env, client, lambda_function, moto_server, reset

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-web"
IMAGES = {v: {"image": f"{ECR}:{v}", "version": v} for v in ("v1", "v2", "v3")}
FUNCTION = "web-staging"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str) -> Iterator[str]:
    reset(moto_url)
    with aws_env(moto_url):
        yield moto_url


def _config(tmp_path: Path, *, strategy: str = "blue-green", secrets: str = "{}") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
secrets: {secrets}
rollback: {{threshold: {{error_rate: 5%}}}}
deployment:
  strategy: {strategy}
  canary: {{steps: [10, 50, 100], analysis_interval: 0s}}
  services:
    - name: web
      runtime: lambda
      env: {{LOG_LEVEL: info}}
environments:
  staging:
    lambda: {{region: us-east-1, alias: live, update_timeout: 5s}}
""")
    return repo


def _ctx(repo: Path, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="deploy")


def _alias(url: str) -> tuple[str, dict[str, float]]:
    found = client(url, "lambda").get_alias(FunctionName=FUNCTION, Name="live")
    return found["FunctionVersion"], (found.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def _events(ctx: AgentContext, kind: EventType) -> list[dict[str, Any]]:
    return [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == kind]


def test_each_deploy_publishes_a_version_the_alias_moves_to_and_a_rollback_moves_it_back(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    arn = lambda_function(aws, FUNCTION)
    repo = _config(tmp_path)
    first = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert first.passed, first.summary
    assert _alias(aws) == ("1", {})
    lam = client(aws, "lambda")
    one = lam.get_function(FunctionName=FUNCTION, Qualifier="1")
    assert one["Code"]["ImageUri"] == IMAGES["v1"]["image"]
    assert one["Configuration"]["Environment"]["Variables"] == {"LOG_LEVEL": "info", "APP_VERSION": "v1",
                                                                "ORCHESTRA_ENV": "staging"}
    second = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v2"]})
    assert second.passed and _alias(aws) == ("2", {})
    live = second.data["live"]["web"]
    assert live["where"] == "lambda web-staging:live (us-east-1)" and live["url"] == f"{arn}:live"
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v2"]}).data["changed"] == []

    back = deploy.rollback(_ctx(repo, settings, redis), "web")
    assert back.passed and back.data["to_version"] == "v1" and _alias(aws) == ("1", {})
    assert deploy.rollback(_ctx(repo, settings, redis), "web").data["changed"] is False
    assert deploy.rollback(_ctx(repo, settings, redis), "web", "v2").passed and _alias(aws) == ("2", {})


def test_canary_gives_the_new_version_alias_weights_step_by_step_judged_on_cloudwatch(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    lambda_function(aws, FUNCTION)
    repo = _config(tmp_path, strategy="canary")
    calls = Invocations(aws, FUNCTION).start()
    try:
        assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
        ctx = _ctx(repo, settings, redis)
        result = deploy.run(ctx, images={"web": IMAGES["v2"]}, pause_s=1.0)
    finally:
        calls.stop()
    assert result.passed, result.summary
    assert [s for s in calls.routing_seen if "2" in s][:2] == [{"1": 0.9, "2": 0.1}, {"1": 0.5, "2": 0.5}]
    assert _alias(aws) == ("2", {})
    judged = [e for e in _events(ctx, EventType.DEPLOYMENT_PROGRESS)
              if e.get("phase") == "judged" and e["verdict"] != "inconclusive"]
    assert [(j["weight"], j["verdict"]) for j in judged] == [(10, "pass"), (50, "pass")]
    assert "errors 0.0% (baseline 0.0%)" in judged[0]["reason"]


def test_a_canary_whose_errors_rise_is_judged_failed_and_the_alias_goes_back(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    lambda_function(aws, FUNCTION)
    repo = _config(tmp_path, strategy="canary")
    calls = Invocations(aws, FUNCTION)
    calls.error_rate["2"] = 0.2  # the version v2 is published as
    calls.start()
    try:
        assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
        ctx = _ctx(repo, settings, redis)
        result = deploy.run(ctx, images={"web": IMAGES["v2"]}, pause_s=1.0)
    finally:
        calls.stop()
    assert not result.passed and "canary step 1 (10% on v2) judged fail" in result.summary
    judged = [e for e in _events(ctx, EventType.DEPLOYMENT_PROGRESS)
              if e.get("phase") == "judged" and e["verdict"] != "inconclusive"]
    assert "errors 20.0% (baseline 0.0%)" in judged[0]["reason"] and judged[0]["verdict"] == "fail"
    assert _alias(aws) == ("1", {})
    state = get_live(redis, "web", "staging")
    assert state and state.current and state.current.version == "v1" and state.weights == {"v1": 100}


def test_a_missing_or_zip_function_is_named_and_nothing_is_published(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    repo = _config(tmp_path)
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "the Lambda function web-staging does not exist in us-east-1" in result.summary
    lambda_function(aws, FUNCTION, package="Zip")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "web-staging is a Zip function" in result.summary
    versions = client(aws, "lambda").list_versions_by_function(FunctionName=FUNCTION)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST"]


def test_secrets_on_lambda_are_refused_before_anything_changes(
        tmp_path: Path, aws: str, settings: Settings, redis: Redis) -> None:
    lambda_function(aws, FUNCTION)
    repo = _config(tmp_path, secrets="{manager: aws_secrets_manager, keys: [DATABASE_URL]}")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "not supported yet: secrets.keys on Lambda (DATABASE_URL)" in result.summary
    assert [v["Version"] for v in client(aws, "lambda").list_versions_by_function(
        FunctionName=FUNCTION)["Versions"]] == ["$LATEST"]


@pytest.mark.parametrize("settings_text,problem", [
    ("{function: 'web staging'}", "is not a Lambda function or alias name"),
    ("{alias: '123'}", "is not a Lambda function or alias name"),
    ("{aliass: live}", "aliass"),
])
def test_lambda_settings_that_cannot_act_are_refused(tmp_path: Path, settings_text: str, problem: str) -> None:
    (tmp_path / "devops_orchestra.yaml").write_text(
        "project: {name: shop}\ndeployment:\n  services:\n    - {name: web, runtime: lambda}\n"
        f"environments:\n  staging:\n    lambda: {settings_text}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert problem in str(caught.value) and "environments.staging.lambda" in str(caught.value)
