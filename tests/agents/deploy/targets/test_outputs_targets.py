"""The EC2 and Lambda targets from what the last apply left (agents/iac/outputs.py), with no settings of their
own in devops_orchestra.yaml: the platform made through boto3 as the generated Terraform would, its outputs
remembered as the iac stage remembers them, then a deploy through the registry (moto_server on loopback)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.iac import outputs
from agents.observability.policy import Policy, default_specs
from agents.observability.sources import Ec2Source, source_for
from agents.observability.watch import WatchedRelease
from orchestra.config import load_config
from orchestra.config.types import LambdaFunction
from orchestra.errors import StageFailed
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.moto import aws_env, client, lambda_function, moto_server, reset
from tests.support.moto_ec2 import Ec2Alb, ec2_platform

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-web"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _ctx(tmp_path: Path, settings: Settings, redis: Redis, runtime: str, extra: str = "") -> AgentContext:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
deployment:
  services:
    - {{name: web, runtime: {runtime}, port: 8080}}
environments:
  staging: {{{extra}}}
""")
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="deploy")


def test_an_ec2_deploy_with_only_the_applied_outputs_goes_live_behind_the_output_listener(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis) -> None:
    reset(moto_url)
    built = ec2_platform(moto_url)
    ctx = _ctx(tmp_path, settings, redis, "ec2")
    with aws_env(moto_url):
        refused = deploy.run(ctx, images={"web": {"image": f"{ECR}:v1", "version": "v1"}})
        assert not refused.passed and "staging has no EC2 settings" in refused.summary
        assert "add environments.staging.ec2" in refused.data["hint"]
        outputs.remember(redis, "shop", "staging", {"ec2_listener": "arn:aws:ecs:us-east-1:123456789012:cluster/shop"})
        bad = deploy.run(ctx, images={"web": {"image": f"{ECR}:v1", "version": "v1"}})
        assert not bad.passed and "the EC2 settings staging's Terraform outputs make are not valid: listener" \
            in bad.summary, bad.summary
        outputs.remember(redis, "shop", "staging", {"ec2_listener": built.listener, "url": "http://shop"})
        result = deploy.run(ctx, images={"web": {"image": f"{ECR}:v1", "version": "v1"}})
        assert result.passed, result.summary
        assert result.data["live"]["web"]["where"] == "ec2 shop (us-east-1)"
        groups = client(moto_url, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
        assert {g["AutoScalingGroupName"]: g["DesiredCapacity"] for g in groups} == {"web-staging-blue": 1,
                                                                                     "web-staging-green": 0}
        # the watch after the release reads the live colour's ALB metrics and its group's CPU the same way
        alb = Ec2Alb(moto_url, built)
        alb.error_rate[f"{ECR}:v1"] = 0.2
        alb.tick()
        client(moto_url, "cloudwatch").put_metric_data(Namespace="AWS/EC2", MetricData=[
            {"MetricName": "CPUUtilization", "Value": 77.0, "Timestamp": datetime.now(UTC),
             "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "web-staging-blue"}]}])
        rel = WatchedRelease("web", "staging", "v1", None)
        source = source_for(ctx, rel)
        policy = Policy(specs=default_specs(error_rate=0.05), rate_window="5s")
        values = source.values(rel, {"error_rate", "cpu", "request_rate"}, policy, time.time() + 1.0)
    assert isinstance(source, Ec2Source)
    assert values["error_rate"] == pytest.approx(0.2) and values["cpu"] == pytest.approx(77.0)


def test_a_lambda_deploy_with_only_the_applied_aliases_uses_the_generated_names_in_the_aliases_region(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    reset(moto_url)
    lambda_function(moto_url, "web-staging")  # as the generated Terraform names them: <service>-<env>, alias live
    lam = client(moto_url, "lambda")
    version = lam.publish_version(FunctionName="web-staging")["Version"]
    alias = lam.create_alias(FunctionName="web-staging", Name="live", FunctionVersion=version)["AliasArn"]
    outputs.remember(redis, "shop", "staging", {"lambda_aliases": {"web": alias}})
    ctx = _ctx(tmp_path, settings, redis, "lambda")
    with aws_env(moto_url):
        monkeypatch.delenv("AWS_DEFAULT_REGION")  # the region can only come from the alias's ARN
        monkeypatch.delenv("AWS_REGION", raising=False)
        result = deploy.run(ctx, images={"web": {"image": f"{ECR}:v1", "version": "v1"}})
    assert result.passed, result.summary
    assert lam.get_alias(FunctionName="web-staging", Name="live")["FunctionVersion"] != version


def test_lambda_settings_from_the_outputs_and_what_the_environment_says(redis: Redis) -> None:
    arn = "arn:aws:lambda:eu-west-3:123456789012:function:web-staging:live"
    outputs.remember(redis, "shop", "staging", {"lambda_aliases": {"web": arn}})
    assert outputs.lambda_settings(redis, "shop", "staging", None) == LambdaFunction(region="eu-west-3")
    own = LambdaFunction(function="fn-{env}", alias="prod", region="us-west-2")
    assert outputs.lambda_settings(redis, "shop", "staging", own) == own  # the environment's values win
    assert outputs.lambda_settings(redis, "shop", "staging", LambdaFunction(alias="prod")) == \
        LambdaFunction(alias="prod", region="eu-west-3")
    assert outputs.lambda_settings(redis, "shop", "production", None) is None  # nothing applied there
    outputs.remember(redis, "shop", "staging", {"lambda_aliases": {"web": "nonsense"}})
    with pytest.raises(StageFailed, match="holds `nonsense`, not a Lambda alias ARN"):
        outputs.lambda_settings(redis, "shop", "staging", None)
