"""`runtime: ec2` in the generated Terraform: a base launch template (IMDSv2 only, encrypted root volume, no
public address, the instance role) and two Auto Scaling groups at zero per service, instance target groups behind
the listener the ECS services use, named as the EC2 deploy target looks them up; formatted, valid, passed by the
policy scan, planned, and applied into a real moto_server and read back through boto3."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from redis import Redis

from agents.iac import policy
from agents.iac import stage as iac
from agents.iac.generate import Spec, render, spec_for, write
from orchestra.config import load_config
from orchestra.config.loader import parse_config
from orchestra.errors import ConfigError
from orchestra.settings import Settings
from tests.agents.iac.test_generate import shop
from tests.agents.iac.test_generate_resources import DATABASE, terraform, tf_env
from tests.agents.iac.test_plan import after, context, planned
from tests.agents.iac.test_plan import shop as shop_repo
from tests.support.moto import aws_env, session

LISTENER = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/1/2"
EC2 = (f"  staging:\n    ec2:\n      listener: {LISTENER}\n      target_groups: ['{{service}}-{{env}}-b', "
       "'{service}-{env}-g']\n      log_group: /shop/{env}/{service}\n      secret_prefix: shop/{env}/\n"
       "      instance_type: t3.small\n")
AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


def mixed(repo: Path) -> Path:
    """The shop with its backend on ECS and its frontend on EC2 (three instances at most)."""
    config = repo / "devops_orchestra.yaml"
    text = config.read_text().replace("runtime: ecs", "runtime: ec2", 2).replace("runtime: ec2", "runtime: ecs", 1)
    config.write_text(text.replace("      port: 5000\n", "      port: 5000\n      replicas: 3\n", 1))
    return repo


def test_ec2_services_get_launch_templates_groups_and_the_load_balancer_without_ecs() -> None:
    files = render(spec_for(shop("ec2"), "staging"))
    assert sorted(files) == ["alb.tf", "ec2.tf", "ecr.tf", "logs.tf", "network.tf", "outputs.tf", "provider.tf",
                             "variables.tf"]
    outputs = files["outputs.tf"]
    assert all(f'output "{name}"' in outputs for name in ("ec2_listener", "ec2_auto_scaling_groups",
                                                          "ec2_launch_templates", "ecr_repositories"))
    assert outputs.count('output "url"') == 1 and "ecs_" not in outputs
    spec = spec_for(shop("ec2"), "staging")
    assert spec.ec2_services["frontend"] == {
        "port": 5000, "health": "/health", "repository": "shop-frontend", "priority": 1, "log_group":
        "/orchestra/frontend", "target_groups": {"blue": "frontend-blue", "green": "frontend-green"},
        "path_pattern": "/frontend/*", "instance_type": "t3.micro", "replicas": 1}
    assert spec.default_service == "backend" and spec.ec2_secret_prefix == "staging/" and not spec.ecs_services
    assert spec.repositories == ["shop-backend", "shop-frontend"]


def test_the_environments_ec2_settings_name_what_is_generated_and_ecs_and_ec2_share_the_listener() -> None:
    spec = spec_for(shop("ec2", ecs=EC2), "staging")
    backend = spec.ec2_services["backend"]
    assert backend["target_groups"] == {"blue": "backend-staging-b", "green": "backend-staging-g"}
    assert (backend["log_group"], backend["instance_type"]) == ("/shop/staging/backend", "t3.small")
    assert spec.ec2_secret_prefix == "shop/staging/"
    assert spec_for(shop("ec2", ecs=EC2), "production").ec2_services["backend"]["instance_type"] == "t3.micro"
    mix = spec_for(shop("ecs", frontend="ec2"), "staging")
    assert list(mix.ecs_services) == ["backend"] and list(mix.ec2_services) == ["frontend"]
    assert (mix.default_service, mix.ecs_services["backend"]["priority"], mix.ec2_services["frontend"]["priority"]) \
        == ("backend", 0, 1)  # the backend gets the default action, the frontend a rule of its own
    assert sorted(render(mix)) == ["alb.tf", "ec2.tf", "ecr.tf", "ecs.tf", "iam.tf", "logs.tf", "network.tf",
                                   "outputs.tf", "provider.tf", "variables.tf"]
    assert render(mix)["outputs.tf"].count('output "url"') == 1
    first = spec_for(shop("ecs", frontend="ec2"), "staging", ["frontend"])
    assert first.default_service == "frontend" and not first.ecs_services  # the run's only web service
    with_db = parse_config((Path(__file__).parents[3] / "examples" / "shop" / "devops_orchestra.yaml").read_text()
                           .replace("runtime: docker", "runtime: ec2") + "\nresources:\n" + DATABASE,
                           filename="devops_orchestra.yaml")
    assert {"rds.tf", "network.tf", "ec2.tf"} <= set(render(spec_for(with_db, "staging")))


def test_an_instance_type_that_is_not_one_is_refused_naming_the_field() -> None:
    for bad in ('t3.micro"\n}\nresource "x" "y" {', "${file(\"/etc/passwd\")}", "T3.MICRO"):
        with pytest.raises(ConfigError) as refused:
            shop("ec2", ecs=EC2.replace("t3.small", json.dumps(bad)))
        assert "environments.staging.ec2.instance_type" in str(refused.value), str(refused.value)
        assert "is not an EC2 instance type" in str(refused.value) and "e.g. t3.micro" in str(refused.value)


def test_hostile_ec2_values_reach_terraform_as_exactly_themselves(tmp_path: Path, settings: Settings,
                                                                  provider_mirror: Path) -> None:
    """Past the configuration's checks (a Spec made directly): hcl.py quotes them, Terraform reads them back whole."""
    evil = 'x"}\nresource "aws_instance" "evil" { user_data = "${file("/etc/passwd")}" }\n%{ if true }y%{ endif }'
    service = {"port": 80, "health": "/h", "repository": "r", "target_groups": {"blue": "b", "green": "g"},
               "path_pattern": "/x/*", "priority": 0, "log_group": evil, "instance_type": evil, "replicas": 1}
    spec = Spec(project="shop", environment="staging", region="us-east-1", ec2_services={evil: service},
                ec2_secret_prefix=evil)
    folder = tmp_path / "generated"
    write(render(spec), folder)
    (tmp_path / "terraform.rc").write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    env = tf_env(folder, settings)
    terraform(folder, env, "fmt", "-check")
    terraform(folder, env, "init", "-input=false", f"-backend-config=path={tmp_path / 'state'}")
    terraform(folder, env, "validate")
    shown = terraform(folder, env, "console", stdin="jsonencode([var.ec2_services, var.ec2_secret_prefix])\n")
    assert json.loads(json.loads(shown)) == [{evil: service}, evil]
    assert "evil" not in terraform(folder, env, "providers")


def test_the_mix_is_generated_checked_and_planned_against_moto(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    """The iac stage on the backend on ECS and the frontend on EC2: fmt, validate, checkov (nothing blocking), plan."""
    settings = settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None)
    ctx = context(mixed(shop_repo(tmp_path, "ecs")), settings, redis)
    with aws_env(moto):
        result = iac.run(ctx)
        image = session(moto).client("ssm", endpoint_url=moto).get_parameter(Name=AL2023)["Parameter"]["Value"]
    assert result.passed, result.summary
    assert result.data["policy"]["blocking"] == [] and "0 blocking" in result.summary
    for kinds in ("aws_autoscaling_group ×2", "aws_launch_template ×1", "aws_ecs_service ×2", "aws_lb_target_group ×4",
                  "aws_iam_instance_profile ×1", "aws_lb_listener_rule ×1"):
        assert kinds in result.summary, result.summary
    plan = planned(ctx, settings.run_dir(ctx.run.id) / "infrastructure" / "generated")
    types = {g["name"]: g["target_type"] for g in after(plan, "aws_lb_target_group")}
    assert types == {"backend-blue": "ip", "backend-green": "ip", "frontend-blue": "instance",
                     "frontend-green": "instance"}
    groups = {g["name"]: (g["min_size"], g["max_size"], g["desired_capacity"], g["health_check_type"],
                          g["wait_for_capacity_timeout"]) for g in after(plan, "aws_autoscaling_group")}
    assert groups == {f"frontend-staging-{c}": (0, 3, 0, "ELB", "0") for c in ("blue", "green")}
    [template] = after(plan, "aws_launch_template")
    assert (template["name"], template["image_id"], template["instance_type"]) == ("frontend-staging", image,
                                                                                    "t3.micro")
    [metadata] = template["metadata_options"]
    assert (metadata["http_endpoint"], metadata["http_tokens"], metadata["http_put_response_hop_limit"]) == (
        "enabled", "required", 1)
    assert template["user_data"] is None  # each release adds its own
    [rule] = after(plan, "aws_lb_listener_rule")
    assert rule["condition"][0]["path_pattern"][0]["values"] == ["/frontend/*"]


def test_the_ec2_platform_is_applied_into_moto_read_back_through_boto3_and_destroyed(
        tmp_path: Path, settings: Settings, provider_mirror: Path, moto: str) -> None:
    """The generated files for the shop on EC2 as the stage writes them: formatted, valid, passed by checkov, then
    applied up to the Auto Scaling groups and the instance role (not the load balancer and the NAT gateway, which
    moto makes Terraform wait a minute for; the stage's plan of them is the test above), and destroyed."""
    config = load_config(shop_repo(tmp_path, "ec2"))
    folder = tmp_path / "infrastructure" / "generated"
    write(render(spec_for(config, "staging")), folder)
    (folder.parent / "terraform.rc").write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    started = time.monotonic()
    with aws_env(moto):
        env = {**tf_env(folder, settings), "TF_VAR_aws_endpoint": moto}
        terraform(folder, env, "fmt", "-check")
        terraform(folder, env, "init", "-input=false", f"-backend-config=path={tmp_path / 'state'}")
        terraform(folder, env, "validate")
        scanned = policy.scan(folder, "generated/", tmp_path / "scan", cache=settings.cache / "checkov")
        assert not scanned.blocking and not [f for f in scanned.others if f.file.endswith("ec2.tf")]
        checked = time.monotonic()
        terraform(folder, env, "apply", "-input=false", "-auto-approve", "-target=aws_autoscaling_group.colour",
                  "-target=aws_iam_role_policy.instance")
        applied = time.monotonic()
        outputs = {k: v["value"] for k, v in json.loads(terraform(folder, env, "output", "-json")).items()}
    aws = session(moto)
    ec2, scaling = aws.client("ec2", endpoint_url=moto), aws.client("autoscaling", endpoint_url=moto)
    elb, iam = aws.client("elbv2", endpoint_url=moto), aws.client("iam", endpoint_url=moto)
    assert outputs["ec2_launch_templates"] == {"backend": "backend-staging", "frontend": "frontend-staging"}
    assert outputs["ec2_auto_scaling_groups"] == {f"{s}-{c}": f"{s}-staging-{c}" for s in ("backend", "frontend")
                                                  for c in ("blue", "green")}
    image = aws.client("ssm", endpoint_url=moto).get_parameter(Name=AL2023)["Parameter"]["Value"]
    [version] = ec2.describe_launch_template_versions(LaunchTemplateName="backend-staging",
                                                      Versions=["$Default"])["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert (data["ImageId"], data["InstanceType"]) == (image, "t3.micro") and image.startswith("ami-")
    assert data["MetadataOptions"]["HttpTokens"] == "required" and not data.get("UserData")  # each release adds its own
    assert data["Monitoring"] == {"Enabled": True} and data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    [tasks] = ec2.describe_security_groups(GroupNames=["shop-staging-tasks"])["SecurityGroups"]
    assert data["SecurityGroupIds"] == [tasks["GroupId"]] and "NetworkInterfaces" not in data  # no public address
    [disk] = data["BlockDeviceMappings"]
    assert disk["Ebs"]["Encrypted"] is True
    profile = iam.get_instance_profile(InstanceProfileName="shop-staging-ec2-instance")["InstanceProfile"]
    assert data["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["shop-staging-ec2-instance"]
    policy_doc = iam.get_role_policy(RoleName="shop-staging-ec2-instance", PolicyName="pull-log-read-secrets")
    statements = policy_doc["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in statements][1:] == [
        ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
        ["logs:CreateLogStream", "logs:PutLogEvents"], ["secretsmanager:GetSecretValue"]]
    ecr = aws.client("ecr", endpoint_url=moto).describe_repositories()["repositories"]
    assert statements[1]["Resource"] == sorted(r["repositoryArn"] for r in ecr)  # these two repositories only
    assert statements[2]["Resource"] == [f"arn:aws:logs:us-east-1:123456789012:log-group:/orchestra/{s}:*"
                                         for s in ("backend", "frontend")]  # their streams, in these groups only
    assert statements[3]["Resource"] == ["arn:aws:secretsmanager:us-east-1:*:secret:staging/*"]
    groups = {g["TargetGroupName"]: g for g in elb.describe_target_groups()["TargetGroups"]}
    assert {n: g["TargetType"] for n, g in groups.items()} == {
        f"{s}-{c}": "instance" for s in ("backend", "frontend") for c in ("blue", "green")}
    found = scaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert sorted(g["AutoScalingGroupName"] for g in found) == sorted(outputs["ec2_auto_scaling_groups"].values())
    private = {s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "tag:Name", "Values": [
        "shop-staging-private-0", "shop-staging-private-1"]}])["Subnets"]}
    for group in found:
        service, _, colour = group["AutoScalingGroupName"].partition("-staging-")
        assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"], group["Instances"]) == (0, 1, 0, [])
        assert group["TargetGroupARNs"] == [groups[f"{service}-{colour}"]["TargetGroupArn"]]
        assert group["HealthCheckType"] == "ELB" and set(group["VPCZoneIdentifier"].split(",")) == private
        assert group["LaunchTemplate"]["LaunchTemplateName"] == f"{service}-staging"
    assert not ec2.describe_instances()["Reservations"]  # nothing runs until a deploy
    with aws_env(moto):
        terraform(folder, env, "destroy", "-input=false", "-auto-approve")
    done = time.monotonic()
    print(f"checks {checked - started:.1f}s, apply {applied - checked:.1f}s, destroy {done - applied:.1f}s")
    assert not scaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert not ec2.describe_launch_templates()["LaunchTemplates"] and not elb.describe_target_groups()["TargetGroups"]
