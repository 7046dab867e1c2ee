"""The ECS target end to end through boto3 against a real moto_server on loopback.

moto stores task definitions, services, target groups and listener weights but runs no tasks and
routes no traffic: tests/support/moto.py plays the ECS agent (healthy targets for the tasks a
service wants) and the ALB (CloudWatch request and 5xx counts by the listener's weights), through the
same API. The target's calls are real; nothing here ran against AWS itself.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.strategies import TrafficStep
from agents.deploy.targets.ecs.metrics import with_cloudwatch
from agents.deploy.targets.state import Release, get_live
from orchestra.config import load_config
from orchestra.errors import ConfigError
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.moto import Alb, Ecs, Platform, aws_env, client, moto_server, platform, reset
from tests.support.services import free_port

IMAGES = {v: {"image": f"registry.example/shop-web:{v}", "version": v} for v in ("v1", "v2", "v3")}
SECRET = "postgres://shop:s3cr3t-value@db/shop"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str) -> Iterator[tuple[Platform, Ecs]]:
    reset(moto_url)
    built = platform(moto_url)
    agent = Ecs(moto_url, built.cluster, crashing={IMAGES["v3"]["image"]}).start()
    with aws_env(moto_url):
        yield built, agent
    agent.stop()


def _secret(url: str, name: str = "staging/DATABASE_URL") -> str:
    return str(client(url, "secretsmanager").create_secret(Name=name, SecretString=SECRET)["ARN"])


def _config(tmp_path: Path, built: Platform, *, strategy: str = "blue-green", extra: str = "",
            secrets: str = "{manager: aws_secrets_manager, keys: [DATABASE_URL]}") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
secrets: {secrets}
rollback: {{threshold: {{error_rate: 5%, latency_ms: 800}}}}
deployment:
  strategy: {strategy}
  canary: {{steps: [25, 50, 100], analysis_interval: 0s}}
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
{extra}""")
    return repo


def _ctx(repo: Path, settings: Settings, redis: Redis, strategy: str | None = None) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging", strategy=strategy)
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="deploy")


def _weights(built: Platform) -> dict[str, int]:
    names = {arn: name for name, arn in built.groups.items()}
    rules = client(built.url, "elbv2").describe_rules(ListenerArn=built.listener)["Rules"]
    action = next(r for r in rules if r["IsDefault"])["Actions"][0]
    groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or \
        [{"TargetGroupArn": action["TargetGroupArn"], "Weight": 100}]
    return {names[g["TargetGroupArn"]]: g["Weight"] for g in groups}


def _desired(built: Platform) -> dict[str, int]:
    ecs = client(built.url, "ecs")
    arns = ecs.list_services(cluster=built.cluster)["serviceArns"]
    return {s["serviceName"]: s["desiredCount"] for s in ecs.describe_services(cluster=built.cluster,
                                                                               services=arns)["services"]
            if s["status"] == "ACTIVE"} if arns else {}


def _events(ctx: AgentContext, kind: EventType) -> list[dict[str, Any]]:
    return [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == kind]


def test_blue_green_moves_the_listener_only_once_the_new_colour_is_healthy_and_rolls_back(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis) -> None:
    built, agent = aws
    secret_arn = _secret(built.url)
    repo = _config(tmp_path, built)
    first = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert first.passed, first.summary
    assert _weights(built) == {"web-blue": 100, "web-green": 0}
    ecs = client(built.url, "ecs")
    service = ecs.describe_services(cluster="shop", services=["web-staging-blue"])["services"][0]
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    container = task["containerDefinitions"][0]
    assert (task["cpu"], task["memory"], task["executionRoleArn"]) == ("256", "512", built.execution_role)
    assert container["image"] == IMAGES["v1"]["image"] and container["portMappings"][0]["containerPort"] == 8080
    assert "http://localhost:8080/health" in container["healthCheck"]["command"][1]
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/orchestra/web"
    assert container["secrets"] == [{"name": "DATABASE_URL", "valueFrom": secret_arn}]  # the ARN, never the value
    assert SECRET not in str(task) and service["loadBalancers"][0]["targetGroupArn"] == built.groups["web-blue"]

    agent.slow[IMAGES["v2"]["image"]] = 1.0  # its tasks take a second to pass their health checks
    seen: list[tuple[float, dict[str, int]]] = []
    done = threading.Event()

    def watch() -> None:
        # every distinct state, and always one sample taken after the deploy returned: a watcher starved on a
        # loaded machine still records the final state, and a switch before the health check is still caught
        while True:
            finished = done.is_set()
            weights = _weights(built)
            if not seen or seen[-1][1] != weights:
                seen.append((time.monotonic(), weights))
            if finished:
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ctx = _ctx(repo, settings, redis)
    second = deploy.run(ctx, images={"web": IMAGES["v2"]})
    done.set()
    watcher.join()
    assert second.passed, second.summary
    assert seen[-1][1] == {"web-blue": 0, "web-green": 100}
    switched_at = next(t for t, w in seen if w.get("web-green"))  # the first sample with any weight on green
    assert switched_at >= agent.healthy_at[f"web-staging-green:{IMAGES['v2']['image']}"]
    assert _desired(built) == {"web-staging-blue": 2, "web-staging-green": 2}  # the old colour kept for keep_previous
    live = second.data["live"]["web"]
    assert live["where"] == "ecs shop (us-east-1)" and live["weights"] == {"v2": 100}
    assert live["url"].startswith("http://shop-")  # the ALB's DNS name
    assert _events(ctx, EventType.DEPLOYMENT_TRIGGERED)[0]["colour"] == "green"
    assert SECRET not in str([e.data for e in ctx.bus.replay(ctx.run.id)])  # the value is AWS's, never ours

    back = deploy.rollback(_ctx(repo, settings, redis), "web")
    assert back.passed and back.data["to_version"] == "v1", back.summary
    assert _weights(built) == {"web-blue": 100, "web-green": 0}
    assert _desired(built) == {"web-staging-blue": 2, "web-staging-green": 2}  # nothing had to be scaled
    assert deploy.rollback(_ctx(repo, settings, redis), "web").data["changed"] is False


def test_canary_moves_the_weights_step_by_step_judged_on_cloudwatch(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis) -> None:
    built, _ = aws
    _secret(built.url)
    repo = _config(tmp_path, built, strategy="canary")
    alb = Alb(built.url, built, requests_per_tick=1000).start()
    try:
        assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
        ctx = _ctx(repo, settings, redis)
        result = deploy.run(ctx, images={"web": IMAGES["v2"]}, pause_s=1.0)
    finally:
        alb.stop()
    assert result.passed, result.summary
    assert [w for w in alb.weights_seen if w.get("web-green")][:2] == [
        {"web-blue": 75, "web-green": 25}, {"web-blue": 50, "web-green": 50}]
    assert _weights(built) == {"web-blue": 0, "web-green": 100}
    judged = [e for e in _events(ctx, EventType.DEPLOYMENT_PROGRESS) if e.get("phase") == "judged"]
    # a step asked before the ALB reported enough requests is inconclusive and asked again, never passed
    waited = [j for j in judged if j["verdict"] == "inconclusive"]
    assert all("canary requests, need 50" in j["reason"] for j in waited)
    judged = [j for j in judged if j not in waited]
    assert [(j["weight"], j["verdict"], j["source"]) for j in judged] == [(25, "pass", "cloudwatch"),
                                                                          (50, "pass", "cloudwatch")]
    assert "5xx 0.0% (baseline 0.0%)" in judged[0]["reason"]
    # moto cannot compute percentiles: the reason says p99 was not answered, the counts decided
    assert "TargetResponseTime p99" in judged[0]["reason"]
    assert result.data["verdicts"]["web"] == [{"step": 1, "weight": 25, "verdict": "pass"},
                                              {"step": 2, "weight": 50, "verdict": "pass"}]


def test_a_canary_whose_5xx_rise_is_judged_failed_gets_its_weight_back_first_then_scaled_down(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis) -> None:
    built, _ = aws
    _secret(built.url)
    repo = _config(tmp_path, built, strategy="canary")
    alb = Alb(built.url, built, requests_per_tick=1000)
    alb.error_rate[IMAGES["v2"]["image"]] = 0.3
    alb.start()
    try:
        assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
        ctx = _ctx(repo, settings, redis)
        result = deploy.run(ctx, images={"web": IMAGES["v2"]}, pause_s=1.0)
    finally:
        alb.stop()
    assert not result.passed and "canary step 1 (25% on v2) judged fail" in result.summary
    judged = [e for e in _events(ctx, EventType.DEPLOYMENT_PROGRESS) if e.get("phase") == "judged"
              and e["verdict"] != "inconclusive"]
    assert judged[0]["verdict"] == "fail" and "5xx 30.0% (baseline 0.0%)" in judged[0]["reason"]
    assert "above the threshold 5%" in judged[0]["reason"]
    assert _weights(built) == {"web-blue": 100, "web-green": 0}
    assert _desired(built) == {"web-staging-blue": 2, "web-staging-green": 0}
    state = get_live(redis, "web", "staging")
    assert state and state.current and state.current.version == "v1" and state.weights == {"v1": 100}


def test_a_colour_that_never_gets_healthy_fails_with_what_aws_says_and_traffic_never_moves(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis) -> None:
    built, _ = aws
    _secret(built.url)
    repo = _config(tmp_path, built)
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    mark = time.monotonic()
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v3"]})
    assert not result.passed and time.monotonic() - mark < 15
    error = result.data["error"]
    assert "web-staging-green (v3) was not healthy within 3s: 0/2 targets healthy in target group web-green" in error
    assert "no logs in /orchestra/web" in error or "no log lines" in error
    assert _weights(built) == {"web-blue": 100, "web-green": 0}
    assert _desired(built) == {"web-staging-blue": 2, "web-staging-green": 0}
    state = get_live(redis, "web", "staging")
    assert state and state.current and state.current.version == "v1"


def test_a_missing_secret_stops_the_deploy_naming_the_key_before_anything_is_created(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis) -> None:
    built, _ = aws
    repo = _config(tmp_path, built)
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed
    assert "the secret DATABASE_URL is missing: no Secrets Manager secret staging/DATABASE_URL" in result.summary
    assert _desired(built) == {} and client(built.url, "ecs").list_task_definitions()["taskDefinitionArns"] == []
    assert get_live(redis, "web", "staging") is None


def test_plain_env_secrets_are_refused_on_ecs_rather_than_written_into_the_task_definition(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis) -> None:
    built, _ = aws
    repo = _config(tmp_path, built, secrets="{manager: env, keys: [DATABASE_URL]}")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "ECS tasks get their secrets from Secrets Manager by ARN" in result.summary
    assert _desired(built) == {}


def test_an_endpoint_out_of_reach_is_named_with_aws_endpoint_url(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis) -> None:
    built, _ = aws
    repo = _config(tmp_path, built)
    closed = f"http://127.0.0.1:{free_port()}"
    with aws_env(closed):
        result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed
    assert "AWS could not be reached for secretsmanager:DescribeSecret" in result.summary
    assert f"AWS_ENDPOINT_URL={closed}" in result.summary and "check AWS_ENDPOINT_URL" in result.data["error"]


def test_without_credentials_the_deploy_says_how_to_give_them(
        tmp_path: Path, aws: tuple[Platform, Ecs], settings: Settings, redis: Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    built, _ = aws
    repo = _config(tmp_path, built)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "no AWS credentials for secretsmanager:DescribeSecret" in result.summary
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE" in result.data["error"]


def test_a_refused_permission_names_the_iam_action_and_undoes_what_was_started(
        tmp_path: Path, settings: Settings, redis: Redis) -> None:
    """A moto_server enforcing IAM: the deployer may do everything but move the listener's weights."""
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "6"}) as url:
        iam = client(url, "iam")
        keys = {}
        for user, statement in (("admin", {"Effect": "Allow", "Action": "*", "Resource": "*"}),
                                ("deployer", {"Effect": "Deny", "Action": "elasticloadbalancing:ModifyListener",
                                              "Resource": "*"})):
            iam.create_user(UserName=user)
            statements = [{"Effect": "Allow", "Action": "*", "Resource": "*"}, statement]
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": statements}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        admin = keys["admin"]
        built = platform(url, **admin)
        client(url, "secretsmanager", **admin).create_secret(Name="staging/DATABASE_URL", SecretString=SECRET)
        agent = Ecs(url, built.cluster, credentials=admin).start()
        try:
            repo = _config(tmp_path, built)
            deployer = keys["deployer"]
            with aws_env(url, AWS_ACCESS_KEY_ID=deployer["aws_access_key_id"],
                         AWS_SECRET_ACCESS_KEY=deployer["aws_secret_access_key"]):
                result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
        finally:
            agent.stop()
        assert not result.passed
        assert "AWS refused elasticloadbalancing:ModifyListener: AccessDenied" in result.data["error"]
        assert "grant the bot's IAM identity `elasticloadbalancing:ModifyListener`" in result.data["error"]
        ecs = client(url, "ecs", **admin)
        service = ecs.describe_services(cluster="shop", services=["web-staging-blue"])["services"][0]
        assert service["desiredCount"] == 0  # the colour it started was scaled back down
        assert get_live(redis, "web", "staging") is None


@pytest.mark.parametrize("settings_text,problem", [
    ("{cluster: shop, listener: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/a/b/c, "
     "execution_role: 'arn:aws:iam::123456789012:role/r'}", "FARGATE tasks need `subnets`"),
    ("{cluster: shop, listener: 'arn:aws:ecs:us-east-1:123456789012:cluster/shop', subnets: [s]}",
     "is not the ARN of a listener"),
    ("{cluster: shop, listener: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/a/b/c, "
     "launch_type: EC2, cpu: 300}", "is not a task CPU size"),
    ("{cluster: shop, listener: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/a/b/c, "
     "launch_type: EC2, target_groups: [a, a]}", "the two target groups must differ"),
    ("{cluster: shop, listener: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/a/b/c, "
     "launch_type: EC2, clustr: x}", "clustr"),
    ("{listener: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/a/b/c, launch_type: EC2}",
     "cluster"),
])
def test_ecs_settings_that_cannot_act_are_refused(tmp_path: Path, settings_text: str, problem: str) -> None:
    (tmp_path / "devops_orchestra.yaml").write_text(
        "project: {name: shop}\ndeployment:\n  services:\n    - {name: web, runtime: ecs}\n"
        f"environments:\n  staging:\n    ecs: {settings_text}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert problem in str(caught.value) and "environments.staging.ecs" in str(caught.value)


def test_an_environment_without_ecs_settings_is_named(tmp_path: Path, settings: Settings, redis: Redis) -> None:
    (tmp_path / "devops_orchestra.yaml").write_text(
        "project: {name: shop}\ndeployment:\n  services:\n    - {name: web, runtime: ecs}\n")
    result = deploy.run(_ctx(tmp_path, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "staging has no ECS settings" in result.summary
    assert "environments.staging.ecs" in result.data["hint"]


@pytest.mark.parametrize("caller,own,verdict", [("fail", "pass", "fail"), ("inconclusive", "pass", "pass"),
                                                ("pass", "fail", "fail"), ("inconclusive", "fail", "fail")])
def test_a_callers_judge_can_only_make_an_ecs_step_stricter(caller: str, own: str, verdict: str) -> None:
    """deploy_judge hands over the Prometheus judge, which never has ECS data (inconclusive): CloudWatch decides."""
    step = TrafficStep("web", "staging", Release(version="v2", image="i", port=1, container="web-staging-green",
                                                 run_id="r"), None, 1, 25, 0.0, "ecs")
    assert with_cloudwatch(lambda s: own, lambda s: caller)(step) == verdict


def test_a_service_behind_a_listener_rule_moves_only_that_rules_weights(
        tmp_path: Path, moto_url: str, settings: Settings, redis: Redis) -> None:
    """Two services share the listener: web on its default action, api on a path rule."""
    reset(moto_url)
    built = platform(moto_url, ("web", "api"))
    agent = Ecs(moto_url, built.cluster).start()
    try:
        with aws_env(moto_url):
            repo = _config(tmp_path, built, secrets="{}")
            text = (repo / "devops_orchestra.yaml").read_text().replace(
                "{name: web, runtime: ecs, port: 8080, replicas: 2}",
                "{name: api, runtime: ecs, port: 8080, replicas: 1}")
            (repo / "devops_orchestra.yaml").write_text(text)
            run = Run(requested_by="U0ALICE", repo=str(repo), services=["api"], env="staging")
            ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                               config=load_config(repo), actor="deploy")
            result = deploy.run(ctx, images={"api": {"image": "registry.example/shop-api:a1", "version": "a1"}})
    finally:
        agent.stop()
    assert result.passed, result.summary
    names = {arn: name for name, arn in built.groups.items()}
    rules = client(moto_url, "elbv2").describe_rules(ListenerArn=built.listener)["Rules"]
    default = next(r for r in rules if r["IsDefault"])["Actions"][0]
    assert default.get("TargetGroupArn") == built.groups["web-blue"]  # web's traffic untouched
    rule = next(r for r in rules if not r["IsDefault"])
    assert rule["Conditions"][0]["Values"] == ["/api/*"]
    assert {names[g["TargetGroupArn"]]: g["Weight"] for g in rule["Actions"][0]["ForwardConfig"]["TargetGroups"]} \
        == {"api-blue": 100, "api-green": 0}
