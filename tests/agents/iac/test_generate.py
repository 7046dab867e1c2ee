"""Terraform generated from devops_orchestra.yaml: deterministic, one file per concern, only what the
runtimes need, and named as the deploy targets look things up."""
from __future__ import annotations

import pytest

from agents.deploy.targets.ecs import resources
from agents.iac.generate import render, spec_for
from orchestra.config import ProjectConfig
from orchestra.config.loader import parse_config
from orchestra.config.types import EcsCluster
from orchestra.errors import OrchestraError
from orchestra.settings import PROJECT_ROOT

SHOP = PROJECT_ROOT / "examples" / "shop"
ECS = ("  staging:\n    ecs:\n      cluster: arn:aws:ecs:us-east-1:123456789012:cluster/shop-blue\n"
       "      listener: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/1/2\n"
       "      region: eu-west-1\n      subnets: [subnet-1]\n      execution_role: arn:aws:iam::123456789012:role/x\n"
       "      target_groups: ['{service}-{env}-b', '{service}-{env}-g']\n      log_group: /shop/{env}/{service}\n"
       "      cpu: 512\n      memory: 1024\n{extra}")


def shop(runtime: str = "ecs", *, ecs: str | None = None, frontend: str | None = None) -> ProjectConfig:
    """The shop's configuration with its services on ``runtime`` (the frontend on ``frontend`` if given)."""
    text = (SHOP / "devops_orchestra.yaml").read_text().replace("runtime: docker", f"runtime: {runtime}")
    if frontend:
        head, tail = text.split("name: frontend", 1)
        text = head + "name: frontend" + tail.replace(f"runtime: {runtime}", f"runtime: {frontend}", 1)
    if ecs is not None:
        text = text.replace("  staging:\n", ecs, 1)
    return parse_config(text, filename="devops_orchestra.yaml")


def test_the_same_configuration_gives_the_same_files_byte_for_byte() -> None:
    assert render(spec_for(shop(), "staging")) == render(spec_for(shop(), "staging"))


def test_ecs_services_get_the_network_cluster_load_balancer_roles_and_logs() -> None:
    files = render(spec_for(shop(), "staging"))
    assert sorted(files) == ["alb.tf", "ecr.tf", "ecs.tf", "iam.tf", "logs.tf", "network.tf", "outputs.tf",
                             "provider.tf", "variables.tf"]
    assert all(len(text.splitlines()) < 300 for text in files.values())
    assert "lambda" not in files["outputs.tf"] and 'output "ecs_listener"' in files["outputs.tf"]


def test_lambda_services_get_functions_with_an_alias_and_no_network() -> None:
    files = render(spec_for(shop("lambda"), "staging"))
    assert sorted(files) == ["ecr.tf", "lambda.tf", "logs.tf", "outputs.tf", "provider.tf", "variables.tf"]
    spec = spec_for(shop("lambda"), "production")
    assert spec.lambda_services["backend"] == {"function": "backend-production", "alias": "live",
                                               "repository": "shop-backend"}


def test_only_the_aws_runtimes_are_generated_and_only_the_runs_services() -> None:
    spec = spec_for(shop("ecs", frontend="docker"), "staging")
    assert list(spec.ecs_services) == ["backend"] and spec.repositories == ["shop-backend"]
    spec = spec_for(shop("ecs"), "staging", ["frontend"])
    assert list(spec.ecs_services) == ["frontend"] and spec.default_service == "frontend"


def test_names_are_the_ones_the_ecs_target_looks_up_by_default() -> None:
    spec = spec_for(shop(), "staging")
    defaults = EcsCluster.model_construct(cluster="", listener="")
    for name, service in spec.ecs_services.items():
        assert list(service["target_groups"].values()) == [
            n.replace("{service}", name).replace("{env}", "staging") for n in defaults.target_groups]
        assert service["log_group"] == resources.log_group(defaults, name, "staging")
        assert service["repository"] == f"shop-{name}"  # as agents/build/service.py names the image
    assert spec.cluster_name == "shop-staging" and spec.region is None and spec.secret_prefix == "staging/"
    backend = spec.ecs_services["backend"]
    assert (backend["port"], backend["health"], backend["priority"]) == (5001, "/health", 0)


def test_the_environments_ecs_settings_name_what_is_generated() -> None:
    spec = spec_for(shop(ecs=ECS.replace("{extra}", "")), "staging")
    frontend = spec.ecs_services["frontend"]
    assert frontend["target_groups"] == {"blue": "frontend-staging-b", "green": "frontend-staging-g"}
    assert frontend["log_group"] == "/shop/staging/frontend"
    assert (frontend["cpu"], frontend["memory"]) == (512, 1024)
    assert spec.cluster_name == "shop-blue" and spec.region == "eu-west-1"
    assert 'default     = "eu-west-1"' in render(spec)["variables.tf"]


def test_ec2_capacity_is_refused_as_not_generated() -> None:
    config = shop(ecs=ECS.replace("{extra}", "      launch_type: EC2\n").replace("      subnets: [subnet-1]\n", ""))
    with pytest.raises(OrchestraError) as refused:
        spec_for(config, "staging")
    assert "launch_type EC2 cannot be generated" in str(refused.value) and "FARGATE" in str(refused.value)


def test_a_target_group_name_longer_than_aws_allows_is_refused_naming_it() -> None:
    config = shop(ecs=ECS.replace("{extra}", "").replace("{service}-{env}-b", "{service}-{env}-blue-colour-xyzw"))
    assert spec_for(config, "production").ecs_services  # no ecs settings there: the default names, which fit
    with pytest.raises(OrchestraError) as refused:
        spec_for(config, "staging")  # backend-staging-blue-colour-xyzw fits (32), frontend's does not (33)
    assert "`frontend-staging-blue-colour-xyzw`" in str(refused.value) and "32" in str(refused.value)


def test_templates_are_packaged_with_the_agent() -> None:
    templates = PROJECT_ROOT / "agents" / "iac" / "generate" / "templates"
    assert sorted(p.name for p in templates.iterdir() if p.is_file()) == sorted(
        f"{n}.tf.tmpl" for n in ("alb", "ec2", "ecr", "ecs", "iam", "lambda", "logs", "network", "outputs_alb",
                                 "outputs_common", "outputs_ec2", "outputs_ecs", "outputs_lambda", "outputs_rds",
                                 "outputs_s3", "provider", "rds", "s3"))
    assert '"*.tmpl"' in (PROJECT_ROOT / "pyproject.toml").read_text()  # package-data: installed with the code
