"""The EC2 target end to end through boto3 against a real moto_server on loopback.

moto really launches an Auto Scaling group's instances from its launch template and registers them in the
group's target groups as healthy; it runs no container and routes no traffic. tests/support/moto.py makes
the platform as the generated Terraform would (ec2_platform), stops the instances of a crashing image
(Crashing: their targets turn ``unused``) and plays the ALB's CloudWatch counts (Ec2Alb), all through the
AWS API. The target's calls are real; nothing here ran against AWS itself.
"""
from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.deploy import intent
from agents.deploy import stage as deploy
from agents.deploy.targets.registry import Targets
from agents.deploy.targets.state import get_live
from orchestra.config import load_config
from orchestra.events import EventType
from orchestra.settings import Settings
from tests.agents.deploy.targets.test_ecs import _ctx
from tests.agents.deploy.targets.test_ecs import _weights as weights
from tests.agents.deploy.test_paced_cloud import ENV, admitted, checks, killed_when_healthy, reconciled
from tests.support.moto import aws_env, client, moto_server, reset
from tests.support.moto_ec2 import Crashing, Ec2Alb, Fleet, ec2_platform, tags_of

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-web"
IMAGES = {v: {"image": f"{ECR}:{v}", "version": v} for v in ("v1", "v2", "v3", "bad")}
SECRET = "postgres://shop:s3cr3t-value@db/shop"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def fleet(moto_url: str) -> Iterator[Fleet]:
    reset(moto_url)
    built = ec2_platform(moto_url)
    crashing = Crashing(moto_url, {IMAGES["bad"]["image"]}).start()
    with aws_env(moto_url):
        yield built
    crashing.stop()


def _secret(url: str) -> None:
    client(url, "secretsmanager").create_secret(Name="staging/DATABASE_URL", SecretString=SECRET)


def _config(tmp_path: Path, built: Fleet, *, strategy: str = "blue-green", env: str = "",
            secrets: str = "{manager: aws_secrets_manager, keys: [DATABASE_URL]}") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(f"""
project: {{name: shop}}
secrets: {secrets}
rollback: {{threshold: {{error_rate: 5%, latency_ms: 800}}}}
deployment:
  strategy: {strategy}
  canary: {{steps: [25, 50, 100], analysis_interval: 1s}}
  blue_green: {{keep_previous: 1h}}
  services:
    - {{name: web, runtime: ec2, port: 8080, replicas: 2, env: [{{key: GREETING, value: hello}}{env}]}}
environments:
  staging:
    ec2:
      listener: {built.listener}
      region: us-east-1
      rollout_timeout: 3s
""")
    return repo


def groups(built: Fleet) -> dict[str, dict[str, Any]]:
    found = client(built.url, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    return {g["AutoScalingGroupName"]: g for g in found}


def desired(built: Fleet) -> dict[str, int]:
    return {name: g["DesiredCapacity"] for name, g in groups(built).items()}


def templates(built: Fleet) -> dict[str, dict[str, str]]:
    found = client(built.url, "ec2").describe_launch_templates()["LaunchTemplates"]
    return {t["LaunchTemplateName"]: tags_of(t) for t in found}


def instances(built: Fleet, group: str) -> list[dict[str, Any]]:
    ids = [i["InstanceId"] for i in groups(built)[group]["Instances"] if i["LifecycleState"] == "InService"]
    found = client(built.url, "ec2").describe_instances(InstanceIds=ids)["Reservations"] if ids else []
    return [i for r in found for i in r["Instances"]]


def test_blue_green_runs_each_release_from_its_own_launch_template_and_deletes_the_ones_no_group_uses(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis) -> None:
    _secret(fleet.url)
    repo = _config(tmp_path, fleet)
    first = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert first.passed, first.summary
    assert weights(fleet) == {"web-blue": 100, "web-green": 0}
    v1 = client(fleet.url, "ec2").describe_launch_templates(LaunchTemplateNames=["web-staging-v1"])[
        "LaunchTemplates"][0]
    running = instances(fleet, "web-staging-blue")
    assert len(running) == 2 and all(tags_of(i)["aws:ec2launchtemplate:id"] == v1["LaunchTemplateId"]
                                     and tags_of(i)["orchestra.image"] == IMAGES["v1"]["image"] for i in running)
    data = client(fleet.url, "ec2").describe_launch_template_versions(LaunchTemplateName="web-staging-v1")[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == fleet.image_id and data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["IamInstanceProfile"] == {"Name": "web-staging-instance"}
    script = base64.b64decode(data["UserData"]).decode()
    assert "--secret-id staging/DATABASE_URL" in script and SECRET not in script  # the name, never the value
    assert f"docker login --username AWS --password-stdin {ECR.split('/')[0]}" in script
    assert "-e GREETING=hello" in script and script.rstrip().endswith(IMAGES["v1"]["image"])

    ctx = _ctx(repo, settings, redis)
    second = deploy.run(ctx, images={"web": IMAGES["v2"]})
    assert second.passed, second.summary
    assert weights(fleet) == {"web-blue": 0, "web-green": 100}
    assert desired(fleet) == {"web-staging-blue": 2, "web-staging-green": 2}  # the old colour kept for keep_previous
    healthy = [e for e in ctx.bus.replay(ctx.run.id) if e.data.get("phase") == "healthy"]
    assert healthy[0].data["launch_template"] == "web-staging-v2"
    live = second.data["live"]["web"]
    assert live["where"] == "ec2 shop (us-east-1)" and live["url"].startswith("http://shop-")

    with Targets(settings, redis, load_config(repo), "staging") as targets:
        state = get_live(redis, "web", "staging")
        assert state and state.previous
        assert targets.for_runtime("ec2").reap(now=state.previous.keep_until + 1) == ["web-staging-blue"]
    assert desired(fleet) == {"web-staging-blue": 0, "web-staging-green": 2}
    assert set(templates(fleet)) == {"web-staging", "web-staging-v1", "web-staging-v2"}  # blue still names v1

    third = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v3"]})
    assert third.passed, third.summary
    assert weights(fleet) == {"web-blue": 100, "web-green": 0}
    assert set(templates(fleet)) == {"web-staging", "web-staging-v2", "web-staging-v3"}  # v1: no group uses it
    assert templates(fleet)["web-staging"] == {}  # the base template untouched
    assert {tags_of(i)["orchestra.version"] for i in instances(fleet, "web-staging-blue")} == {"v3"}

    back = deploy.rollback(_ctx(repo, settings, redis), "web")
    assert back.passed and back.data["to_version"] == "v2", back.summary
    assert weights(fleet) == {"web-blue": 0, "web-green": 100}


def test_a_paced_canary_judged_bad_on_cloudwatch_in_its_check_gets_its_weight_back_and_its_colour_scaled_to_zero(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis) -> None:
    """The deploy job returns after the first weight; the scheduled check (go_on) judges it on CloudWatch."""
    _secret(fleet.url)
    repo = _config(tmp_path, fleet, strategy="canary")
    alb = Ec2Alb(fleet.url, fleet, requests_per_tick=1000)
    alb.error_rate[IMAGES["v2"]["image"]] = 0.3
    alb.start()
    try:
        assert deploy.run(admitted(repo, settings, redis, IMAGES["v1"], admit=False)).passed
        ctx = admitted(repo, settings, redis, IMAGES["v2"])
        first = deploy.run(ctx, pace=True)
        assert first.passed and first.later_s is not None and first.data["weight"] == 25, first.summary
        assert weights(fleet) == {"web-blue": 75, "web-green": 25}
        result, seen = checks(ctx, first, lambda: (weights(fleet), desired(fleet)))
    finally:
        alb.stop()
    assert not result.passed and "canary step 1 (25% on v2) judged fail" in result.summary, result.summary
    judged = [e.data for e in ctx.bus.replay(ctx.run.id) if e.data.get("phase") == "judged"
              and e.data["verdict"] != "inconclusive"]
    assert judged[0]["verdict"] == "fail" and "5xx 30.0% (baseline 0.0%)" in judged[0]["reason"]
    assert seen[-1] == ({"web-blue": 100, "web-green": 0}, {"web-staging-blue": 2, "web-staging-green": 0})
    state = get_live(redis, "web", "staging")
    assert state and state.current and state.current.version == "v1" and state.weights == {"v1": 100}
    assert intent.get(redis, "web", "staging") is None


def test_a_crashing_image_fails_with_what_aws_says_and_the_listener_never_moves(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis) -> None:
    _secret(fleet.url)
    repo = _config(tmp_path, fleet)
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    mark = time.monotonic()
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["bad"]})
    assert not result.passed and time.monotonic() - mark < 15
    error = result.data["error"]
    assert "web-staging-green (bad) was not healthy within 3s: 0/2 instances of the release healthy in " \
           "target group web-green; the group's other targets: 2 unused (Target.InvalidState)" in error, error
    assert "scaling activities" in error and ("no logs in /orchestra/web" in error or "no log lines" in error)
    assert weights(fleet) == {"web-blue": 100, "web-green": 0}
    assert desired(fleet) == {"web-staging-blue": 2, "web-staging-green": 0}
    state = get_live(redis, "web", "staging")
    assert state and state.current and state.current.version == "v1"


@pytest.mark.parametrize("secrets,said", [
    ("{manager: aws_secrets_manager, keys: [DATABASE_URL]}",
     "the secret DATABASE_URL is missing: no Secrets Manager secret staging/DATABASE_URL"),
    ("{manager: env, keys: [DATABASE_URL]}", "EC2 instances read their secrets from Secrets Manager"),
])
def test_a_secret_the_instances_cannot_read_stops_the_deploy_before_anything_is_made(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis, secrets: str, said: str) -> None:
    repo = _config(tmp_path, fleet, secrets=secrets)
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and said in result.summary, result.summary
    assert set(templates(fleet)) == {"web-staging"} and set(desired(fleet).values()) == {0}
    assert get_live(redis, "web", "staging") is None and intent.get(redis, "web", "staging") is None


def test_user_data_over_16_kb_is_refused_naming_the_big_part_before_anything_is_made(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis) -> None:
    repo = _config(tmp_path, fleet, secrets="{}", env=", {key: CERTIFICATE, value: '" + "x" * 17000 + "'}")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and "over AWS's 16384 (16 KB): the biggest part is services[].env CERTIFICATE " \
                                  "(17012 bytes)" in result.summary, result.summary
    assert set(templates(fleet)) == {"web-staging"} and set(desired(fleet).values()) == {0}


def test_a_restart_replaces_the_colours_instances_one_at_a_time(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis) -> None:
    repo = _config(tmp_path, fleet, secrets="{}")
    assert deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]}).passed
    before = {i["InstanceId"] for i in instances(fleet, "web-staging-blue")}
    with Targets(settings, redis, load_config(repo), "staging") as targets:
        target = targets.for_runtime("ec2")
        state = get_live(redis, "web", "staging")
        assert target.restartable and state and state.current
        said = target.restart(state, state.current, "/health")
    assert "replaced the 2 instances of the Auto Scaling group web-staging-blue one at a time" in said
    after = instances(fleet, "web-staging-blue")
    assert len(after) == 2 and not before & {i["InstanceId"] for i in after}
    assert {tags_of(i)["orchestra.version"] for i in after} == {"v1"} and weights(fleet)["web-blue"] == 100
    terminated = client(fleet.url, "ec2").describe_instances(InstanceIds=sorted(before))["Reservations"]
    assert {i["State"]["Name"] for r in terminated for i in r["Instances"]} == {"terminated"}


def test_a_worker_killed_after_the_new_colour_is_healthy_before_the_listener_moves_is_reconciled(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis) -> None:
    repo = _config(tmp_path, fleet, secrets="{}")
    assert deploy.run(admitted(repo, settings, redis, IMAGES["v1"], admit=False)).passed
    ctx = killed_when_healthy(repo, settings, redis, IMAGES["v2"])
    assert desired(fleet) == {"web-staging-blue": 2, "web-staging-green": 2}  # the orphan the kill left
    assert weights(fleet) == {"web-blue": 100, "web-green": 0}
    result = reconciled(ctx)
    assert "traffic stays on v1" in result.summary, result.summary
    assert desired(fleet) == {"web-staging-blue": 2, "web-staging-green": 0}
    assert weights(fleet) == {"web-blue": 100, "web-green": 0}
    live = get_live(redis, "web", ENV)
    assert live is not None and live.current is not None and live.current.version == "v1"
    assert [e for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.DEPLOYMENT_TRIGGERED]


@pytest.mark.parametrize("missing,said", [
    ("template", "the launch template web-staging does not exist in us-east-1"),
    ("group", "the Auto Scaling group web-staging-blue does not exist in us-east-1"),
])
def test_a_platform_without_its_base_template_or_group_is_named_and_nothing_is_made(
        tmp_path: Path, fleet: Fleet, settings: Settings, redis: Redis, missing: str, said: str) -> None:
    if missing == "template":
        client(fleet.url, "ec2").delete_launch_template(LaunchTemplateName="web-staging")
    else:
        client(fleet.url, "autoscaling").delete_auto_scaling_group(AutoScalingGroupName="web-staging-blue")
    repo = _config(tmp_path, fleet, secrets="{}")
    result = deploy.run(_ctx(repo, settings, redis), images={"web": IMAGES["v1"]})
    assert not result.passed and said in result.summary, result.summary
    assert "nothing was deployed" in str(result.data), result.data
    assert not [n for n in templates(fleet) if n.startswith("web-staging-")]
    assert set(desired(fleet).values()) <= {0} and get_live(redis, "web", "staging") is None
