"""The watch's metric sources, each against what really serves the metrics.

ECS and Lambda: the release is deployed through the real targets against a real moto_server on loopback;
tests/support/moto.py plays the ALB and the callers, putting their CloudWatch data through the API as AWS
would (moto routes no traffic and answers p99 with an HTTP 500). Prometheus: real processes of the local
service scraped by a real Prometheus. Nothing here ran against AWS itself.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from agents.observability import stage as observe
from agents.observability.metrics import Selector, metric_queries
from agents.observability.policy import Policy, default_specs
from agents.observability.sources import EcsSource, LambdaSource, PrometheusSource, SourceError, source_for
from agents.observability.watch import WatchedRelease
from orchestra.config import ProjectConfig, load_config
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.fleet import Fleet, fleet
from tests.support.moto import (
    Alb,
    Ecs,
    Invocations,
    Platform,
    aws_env,
    client,
    lambda_function,
    moto_server,
    platform,
    reset,
)
from tests.support.services import free_port, wait_for

POLICY = Policy(specs=default_specs(error_rate=0.05), rate_window="5s")
NAMES = set(POLICY.limits()) | {"request_rate", "memory"}
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-web"
IMAGES = {v: {"image": f"{ECR}:{v}", "version": v} for v in ("v1", "v2")}
FUNCTION = "web-staging"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _repo(tmp_path: Path, runtime: str, environment: str = "") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
deployment:
  strategy: blue-green
  services:
    - {{name: web, runtime: {runtime}, port: 8080}}
environments:
  staging:
{environment}""")
    return repo


def _ecs_settings(built: Platform) -> str:
    return (f"    ecs: {{cluster: {built.cluster}, region: us-east-1, listener: {built.listener}, "
            f"subnets: [{built.subnet}], security_groups: [{built.security_group}], "
            f"execution_role: '{built.execution_role}', rollout_timeout: 5s}}\n")


def _soon() -> float:
    """The watch's next look: moto, like CloudWatch, counts a point only once a whole second has passed."""
    return time.time() + 1.0


def _ctx(repo: Path, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="observe")


def _deploy(repo: Path, settings: Settings, redis: Redis, version: str) -> None:
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES[version]})
    assert result.passed, result.summary


def _cpu(url: str, built: Platform, colour: str, percent: float) -> None:
    """ECS's own CPUUtilization of one colour's service, as ECS would publish it."""
    dims = [{"Name": "ClusterName", "Value": built.cluster}, {"Name": "ServiceName", "Value": f"web-staging-{colour}"}]
    client(url, "cloudwatch").put_metric_data(Namespace="AWS/ECS", MetricData=[
        {"MetricName": "CPUUtilization", "Value": percent, "Timestamp": datetime.now(UTC), "Dimensions": dims}])


@pytest.mark.parametrize(("old_rate", "new_rate"), [(0.0, 0.2), (0.5, 0.0)])
def test_ecs_source_reads_the_live_colours_target_group_and_nothing_of_the_other(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis, old_rate: float, new_rate: float) -> None:
    reset(moto_url)
    built = platform(moto_url)
    agent, alb = Ecs(moto_url, built.cluster).start(), Alb(moto_url, built)
    alb.error_rate = {IMAGES["v1"]["image"]: old_rate, IMAGES["v2"]["image"]: new_rate}
    repo = _repo(tmp_path, "ecs", _ecs_settings(built))
    rel = WatchedRelease("web", "staging", "v2", "v1")
    try:
        with aws_env(moto_url):
            _deploy(repo, settings, redis, "v1")
            alb.tick()  # a minute of v1 on blue
            _deploy(repo, settings, redis, "v2")
            alb.tick()  # a minute of v2 on green
            _cpu(moto_url, built, "green", 95.0)
            _cpu(moto_url, built, "blue", 10.0)
            source = source_for(_ctx(repo, settings, redis), rel)
            assert isinstance(source, EcsSource)
            values = source.values(rel, NAMES, POLICY, _soon())
    finally:
        agent.stop()
    assert set(values) == NAMES
    rate = values["error_rate"]
    assert rate == pytest.approx(new_rate) and rate is not None
    assert (rate > POLICY.limits()["error_rate"]) == (new_rate > 0.05)
    assert values["request_rate"] == pytest.approx(100 / 60) and values["cpu"] == pytest.approx(95.0)
    assert values["latency_p99"] is None  # moto answers p99 with a 500: said as no value, the rest still read
    assert values["memory"] is None and values["memory_growth"] is None  # not in the ALB's or ECS's metrics
    assert source.stats.by_call["cloudwatch:GetMetricData"] >= 3


def test_ecs_release_no_longer_holding_the_traffic_reads_as_no_data_and_errors_say_what_to_fix(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis) -> None:
    reset(moto_url)
    built = platform(moto_url)
    agent, alb = Ecs(moto_url, built.cluster).start(), Alb(moto_url, built)
    alb.error_rate = {IMAGES["v2"]["image"]: 0.5}
    repo = _repo(tmp_path, "ecs", _ecs_settings(built))
    rel = WatchedRelease("web", "staging", "v2", "v1")
    try:
        with aws_env(moto_url):
            _deploy(repo, settings, redis, "v1")
            _deploy(repo, settings, redis, "v2")
            alb.tick()
            source = source_for(_ctx(repo, settings, redis), rel)
            assert isinstance(source, EcsSource)
            assert source.values(rel, NAMES, POLICY, _soon())["error_rate"] == pytest.approx(0.5)
            assert deploy.rollback(_ctx(repo, settings, redis), "web").passed  # someone put v1 back
            calls = source.stats.calls
            assert set(source.values(rel, NAMES, POLICY, _soon()).values()) == {None}
            assert source.stats.calls == calls  # nothing asked of AWS for a release that is not live
            live = WatchedRelease("web", "staging", "v1", None)
            _repoint(built)  # someone sends the listener elsewhere by hand
            with pytest.raises(SourceError) as moved:
                source.values(live, NAMES, POLICY, _soon())
    finally:
        agent.stop()
    assert f"the listener {built.listener} forwards to neither web-blue or web-green" in moved.value.message
    with aws_env(f"http://127.0.0.1:{free_port()}"):  # AWS out of reach
        with pytest.raises(SourceError) as unreachable:
            source_for(_ctx(repo, settings, redis), live).values(live, NAMES, POLICY, _soon())
    assert "cannot read web v1's ALB metrics in CloudWatch: AWS could not be reached" in unreachable.value.message
    assert "AWS_ENDPOINT_URL" in str(unreachable.value.hint)
    gone = _repo(tmp_path, "docker")  # the file no longer says how to reach the cluster the release runs on
    with pytest.raises(SourceError) as missing:
        source_for(_ctx(gone, settings, redis), live)
    assert "web runs on ecs in staging" in missing.value.message and "environments.staging.ecs" in missing.value.message


def _repoint(built: Platform) -> None:
    elb = client(built.url, "elbv2")
    vpc = elb.describe_target_groups(TargetGroupArns=[built.groups["web-blue"]])["TargetGroups"][0]["VpcId"]
    other = elb.create_target_group(Name="other", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip")
    elb.modify_listener(ListenerArn=built.listener, DefaultActions=[
        {"Type": "forward", "TargetGroupArn": other["TargetGroups"][0]["TargetGroupArn"]}])


def _lambda_repo(tmp_path: Path) -> Path:
    return _repo(tmp_path, "lambda", "    lambda: {region: us-east-1, alias: live, update_timeout: 5s}\n")


def test_lambda_source_reads_the_errors_of_the_version_the_alias_points_at(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis) -> None:
    reset(moto_url)
    lambda_function(moto_url, FUNCTION)
    repo = _lambda_repo(tmp_path)
    calls = Invocations(moto_url, FUNCTION)
    calls.error_rate = {"1": 0.9, "2": 0.3}
    first, second = WatchedRelease("web", "staging", "v1", None), WatchedRelease("web", "staging", "v2", "v1")
    with aws_env(moto_url):
        _deploy(repo, settings, redis, "v1")
        source = source_for(_ctx(repo, settings, redis), first)
        assert isinstance(source, LambdaSource)
        quiet = source.values(first, NAMES, POLICY, _soon())
        assert quiet["error_rate"] is None and quiet["request_rate"] == 0.0  # no calls: no rate, never a clean 0
        calls.tick()  # version 1 fails 90% of its calls
        _deploy(repo, settings, redis, "v2")
        calls.tick()  # version 2 fails 30%
        values = source.values(second, NAMES, POLICY, _soon())
        assert set(source.values(first, NAMES, POLICY, _soon()).values()) == {None}  # replaced
    rate = values["error_rate"]
    assert rate == pytest.approx(0.3) and rate is not None and rate > POLICY.limits()["error_rate"]
    assert values["request_rate"] == pytest.approx(1000 / 60)
    assert values["cpu"] is None and values["memory"] is None and values["memory_growth"] is None


def test_a_refused_permission_names_the_iam_action_to_grant(tmp_path: Path, settings: Settings,
                                                            redis: Redis) -> None:
    """A moto_server enforcing IAM: the watcher may not read the listener (which ALB the metrics are of). moto
    enforces IAM for ELB but not for CloudWatch, so a refused cloudwatch:GetMetricData is not played here."""
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "6"}) as url:
        iam = client(url, "iam")
        keys = {}
        for user, extra in (("admin", []), ("watcher", [
                {"Effect": "Deny", "Action": "elasticloadbalancing:DescribeListeners", "Resource": "*"}])):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, *extra]}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        admin = {k.lower(): v for k, v in keys["admin"].items()}
        built = platform(url, **admin)
        agent = Ecs(url, built.cluster, credentials=admin).start()
        repo = _repo(tmp_path, "ecs", _ecs_settings(built))
        rel = WatchedRelease("web", "staging", "v1", None)
        try:
            with aws_env(url, **keys["admin"]):
                _deploy(repo, settings, redis, "v1")
                assert set(source_for(_ctx(repo, settings, redis), rel).values(rel, NAMES, POLICY, _soon())) == NAMES
            with aws_env(url, **keys["watcher"]), pytest.raises(SourceError) as refused:
                source_for(_ctx(repo, settings, redis), rel).values(rel, NAMES, POLICY, _soon())
        finally:
            agent.stop()
    assert "AWS refused elasticloadbalancing:DescribeListeners: AccessDenied" in refused.value.message
    assert "grant the bot's IAM identity `elasticloadbalancing:DescribeListeners`" in str(refused.value.hint)


@pytest.fixture(scope="module")
def shop() -> Iterator[Fleet]:
    with fleet({"v1": {"base_latency_ms": 5}, "v2": {"base_latency_ms": 5, "error_rate": 0.3}},
               service="web") as running:
        yield running


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["docker", "kubernetes"])
def test_prometheus_source_gives_what_the_watch_read_before(shop: Fleet, tmp_path: Path, settings: Settings,
                                                           redis: Redis, runtime: str) -> None:
    config = ProjectConfig.model_validate({"project": {"name": "shop"},
                                           "deployment": {"services": [{"name": "web", "runtime": runtime}]}})
    run = Run(requested_by="U0ALICE", repo="examples/shop", services=["web"], env="staging")
    ctx = AgentContext(run=run, settings=settings.with_(prometheus_url=shop.prom.url), redis=redis,
                       bus=EventBus(redis), workspace=tmp_path, config=config, actor="observe")
    rel = WatchedRelease("web", "staging", "v2", "v1")
    source = source_for(ctx, rel)
    assert isinstance(source, PrometheusSource)
    wait_for(lambda: (source.values(rel, NAMES, POLICY, time.time() - 1)["error_rate"] or 0) > 0.05, timeout=30,
             what="v2's error rate in Prometheus")
    now = time.time() - 1  # both read the same instant, one whose scrapes are all in
    values = source.values(rel, NAMES, POLICY, now)
    queries = metric_queries(Selector("web", "v2"), POLICY.rate_window)
    assert values == {name: shop.prom.client.value(queries[name], at=now) for name in NAMES if name in queries}
    assert values["error_rate"] is not None and values["error_rate"] > POLICY.limits()["error_rate"]
    assert values["latency_p99"] is not None


def test_the_watch_rolls_an_ecs_release_back_on_its_cloudwatch_errors(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis) -> None:
    """The observe stage itself (begin, then its looks), with no Prometheus handed in: the source comes from
    the runtime, the breach from CloudWatch, and the rollback moves the listener back to the old colour."""
    reset(moto_url)
    built = platform(moto_url)
    agent, alb = Ecs(moto_url, built.cluster).start(), Alb(moto_url, built)
    alb.error_rate = {IMAGES["v1"]["image"]: 0.0, IMAGES["v2"]["image"]: 0.3}
    repo = _repo(tmp_path, "ecs", _ecs_settings(built))
    ctx = _ctx(repo, settings, redis)
    ctx.run = RunStore(redis).create(ctx.run)
    policy = Policy(specs=default_specs(error_rate=0.05), rate_window="5s", watch_s=20.0, breach_s=0.0, poll_s=1.0)
    try:
        with aws_env(moto_url):
            _deploy(repo, settings, redis, "v1")
            alb.tick()
            assert deploy.run(ctx, images={"web": IMAGES["v2"]}).passed
            alb.tick()  # a minute of v2 on the new colour: 30% 5xx
            result = observe.run(ctx, policy=policy)
    finally:
        agent.stop()
    assert not result.passed and "rolled back to v1" in result.summary, result.summary
    state = get_live(redis, "web", "staging")
    assert state is not None and state.current is not None and state.current.version == "v1"
    (rollback,) = [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.ROLLBACK_EVENT]
    assert (rollback["metric"], rollback["to_version"]) == ("error_rate", "v1")
    assert rollback["value"] == pytest.approx(0.3)
