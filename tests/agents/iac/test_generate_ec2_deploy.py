"""The generated EC2 platform applied whole (load balancer and listener too) into a real moto_server, its outputs
remembered as the iac_apply stage does, and v1 of the shop's backend deployed through the registry's EC2 target
with nothing but those outputs to find the listener (staging names no `ec2:` settings); moto launches the Auto
Scaling group's instances and registers them healthy in the target group. Slow: the AWS provider waits a minute
for moto's load balancer."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy_stage
from agents.deploy.targets.registry import Targets
from agents.iac import outputs as applied_outputs
from agents.iac.generate import render, spec_for, write
from orchestra.config import load_config
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run
from tests.agents.iac.test_apply_e2e import forwards
from tests.agents.iac.test_generate_resources import terraform, tf_env
from tests.agents.iac.test_plan import shop
from tests.support.moto import aws_env, session

pytestmark = pytest.mark.slow


def test_v1_goes_through_the_ec2_target_onto_the_applied_platform_with_only_its_outputs(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    repo = shop(tmp_path, "ec2")
    config = load_config(repo)
    assert config.environment("staging").ec2 is None
    folder = tmp_path / "infrastructure" / "generated"
    write(render(spec_for(config, "staging", ["backend"])), folder)
    (folder.parent / "terraform.rc").write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    started = time.monotonic()
    with aws_env(moto):
        env = {**tf_env(folder, settings), "TF_VAR_aws_endpoint": moto}
        terraform(folder, env, "init", "-input=false", f"-backend-config=path={tmp_path / 'state'}")
        terraform(folder, env, "apply", "-input=false", "-auto-approve")
        applied = time.monotonic()
        outputs = {k: v["value"] for k, v in json.loads(terraform(folder, env, "output", "-json")).items()}
        applied_outputs.remember(redis, "shop", "staging", outputs)
        target = Targets(settings, redis, config, "staging")._make("ec2")
        assert target.settings.listener == outputs["ec2_listener"]
        image = {"image": "registry.example/shop-backend:v1", "version": "v1"}
        run = Run(requested_by="U0ALICE", repo=str(repo), services=["backend"], env="staging")
        ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                           config=config, actor="deploy")
        result = deploy_stage.run(ctx, images={"backend": image})
        assert result.passed, result.summary
        deployed = time.monotonic()
    aws = session(moto)
    scaling, elb = aws.client("autoscaling", endpoint_url=moto), aws.client("elbv2", endpoint_url=moto)
    groups = {g["TargetGroupName"]: g["TargetGroupArn"] for g in elb.describe_target_groups()["TargetGroups"]}
    weights = forwards(elb, outputs["ec2_listener"], groups)["backend"]
    [serving] = [name for name, weight in weights.items() if weight == 100]
    colour = serving.rsplit("-", 1)[1]
    [group] = scaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["ec2_auto_scaling_groups"][f"backend-{colour}"]])["AutoScalingGroups"]
    assert group["DesiredCapacity"] == 1 and group["TargetGroupARNs"] == [groups[serving]]
    release = group["LaunchTemplate"]["LaunchTemplateName"]
    assert release != outputs["ec2_launch_templates"]["backend"]  # the release's own, made from the base one
    data = aws.client("ec2", endpoint_url=moto).describe_launch_template_versions(
        LaunchTemplateName=release, Versions=["$Default"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    base = aws.client("ec2", endpoint_url=moto).describe_launch_template_versions(
        LaunchTemplateName="backend-staging", Versions=["$Default"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert (data["ImageId"], data["IamInstanceProfile"], data["MetadataOptions"]["HttpTokens"]) == (
        base["ImageId"], base["IamInstanceProfile"], "required") and data.get("UserData")
    healthy = elb.describe_target_health(TargetGroupArn=groups[serving])["TargetHealthDescriptions"]
    assert {t["Target"]["Id"] for t in healthy if t["TargetHealth"]["State"] == "healthy"} >= {
        i["InstanceId"] for i in group["Instances"]}
    print(f"apply {applied - started:.1f}s, deploy {deployed - applied:.1f}s")
