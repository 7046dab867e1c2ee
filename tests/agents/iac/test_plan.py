"""The iac stage end to end with the real terraform, the real AWS provider (from the mirror) and a real
moto_server on loopback: the shop on ECS (and on Lambda) gets generated Terraform that is formatted, valid
and planned, named as the deploy targets look things up; broken input fails saying where and why."""
from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy.targets.ecs import resources
from agents.iac import stage as iac
from orchestra.config import load_config
from orchestra.config.types import EcsCluster
from orchestra.events import EventBus
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run
from tests.support.moto import aws_env

pytestmark = pytest.mark.slow
SHOP = PROJECT_ROOT / "examples" / "shop"
ECS_ADDS = 37  # VPC, 2+2 subnets, 2 gateways, an address, 2 route tables, 4 associations, 2 security groups,
# ALB, listener, rule, 4 target groups, cluster, 2 task definitions, 4 ECS services, 2 roles and a policy, 2 log
# groups, 2 repositories


def shop(tmp_path: Path, runtime: str = "ecs") -> Path:
    """A copy of examples/shop with its services on ``runtime``."""
    repo = tmp_path / "shop"
    shutil.copytree(SHOP, repo)
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("runtime: docker", f"runtime: {runtime}"))
    return repo


def context(repo: Path, settings: Settings, redis: Redis, env: str = "staging") -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), env=env)
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="iac")


def planned(ctx: AgentContext, folder: Path) -> dict[str, Any]:
    """The saved plan as ``terraform show -json`` reads it (the test's own look, not the stage's)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "CHECKPOINT_DISABLE": "1",
           "TF_CLI_CONFIG_FILE": str(ctx.settings.run_dir(ctx.run.id) / "infrastructure" / "terraform.rc"),
           "TF_PLUGIN_CACHE_DIR": str(ctx.settings.cache / "terraform-plugins")}
    done = subprocess.run(["terraform", "show", "-json", "orchestra.tfplan"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(done.stdout))


def after(plan: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c["change"]["after"] for c in plan["resource_changes"] if c["type"] == kind]


def test_the_shop_on_ecs_is_generated_validated_and_planned_against_moto(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    settings = settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None)
    ctx = context(shop(tmp_path), settings, redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert result.passed, result.summary
    assert f"plan: {ECS_ADDS} to add, 0 to change, 0 to destroy" in result.summary
    assert "aws_ecs_service ×4" in result.summary and "aws_lb_target_group ×4" in result.summary
    assert result.summary.startswith("terraform 1.") and "nothing was applied" in result.summary
    folder = settings.run_dir(ctx.run.id) / "infrastructure" / "generated"
    offered = result.data["generated"]
    assert offered["folder"] == str(folder) and "not committed" in offered["note"]
    assert offered["files"] == {f"infrastructure/generated/{p.name}": p.read_text()
                                for p in sorted(folder.glob("*.tf"))}
    assert not (ctx.workspace / "infrastructure").exists() and not (ctx.workspace / "infra").exists()

    plan = planned(ctx, folder)
    defaults = EcsCluster.model_construct(cluster="", listener="")
    services = ("backend", "frontend")
    assert sorted(s["name"] for s in after(plan, "aws_ecs_service")) == sorted(
        resources.service_name(s, "staging", c) for s in services for c in resources.COLOURS)
    assert sorted(t["family"] for t in after(plan, "aws_ecs_task_definition")) == [
        resources.family(s, "staging") for s in services]
    assert sorted(g["name"] for g in after(plan, "aws_lb_target_group")) == sorted(
        n.replace("{service}", s) for s in services for n in defaults.target_groups)
    assert sorted(g["name"] for g in after(plan, "aws_cloudwatch_log_group")) == [
        resources.log_group(defaults, s, "staging") for s in services]
    assert sorted(r["name"] for r in after(plan, "aws_ecr_repository")) == ["shop-backend", "shop-frontend"]
    assert [c["name"] for c in after(plan, "aws_ecs_cluster")] == ["shop-staging"]
    assert {s["desired_count"] for s in after(plan, "aws_ecs_service")} == {0}  # the deploy starts tasks
    provider = plan["configuration"]["provider_config"]["aws"]["expressions"]
    assert "endpoints" in provider and plan["variables"]["aws_endpoint"]["value"] == moto

    events = json.dumps([e.model_dump(mode="json") for e in ctx.bus.replay(ctx.run.id)])
    assert "prior_state" not in events and "planned_values" not in events and moto not in events


def test_two_environments_planned_at_once_get_their_own_files_and_state(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    """Two workers at once, on a plugin cache neither has filled yet (their inits take turns)."""
    settings = settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None,
                              cache_dir=tmp_path / "cold-cache")
    repo = shop(tmp_path, "lambda")
    first, second = context(repo, settings, redis), context(repo, settings, redis, env="production")
    with aws_env(moto), ThreadPoolExecutor(2) as pool:
        results = list(pool.map(iac.run, (first, second)))
    assert all(r.passed for r in results), [r.summary for r in results]
    assert "aws_lambda_alias ×2" in results[0].summary and "aws_lambda_function ×2" in results[0].summary
    assert "aws_ecs" not in results[0].summary and "aws_vpc" not in results[0].summary
    files = [r.data["generated"]["files"] for r in results]
    body = [f["infrastructure/generated/lambda.tf"].split("\n", 2)[2] for f in files]  # after the header
    assert body[0] == body[1] and "environment staging" in files[0]["infrastructure/generated/lambda.tf"]
    assert files[0]["infrastructure/generated/variables.tf"] != files[1]["infrastructure/generated/variables.tf"]
    names = [sorted(f["function_name"] for f in after(planned(c, settings.run_dir(c.run.id) / "infrastructure" /
                                                               "generated"), "aws_lambda_function"))
             for c in (first, second)]
    assert names == [["backend-staging", "frontend-staging"], ["backend-production", "frontend-production"]]
    backends = sorted(p.read_text() for p in (settings.run_dir(c.run.id) / "infrastructure" / "generated" /
                                              ".terraform" / "terraform.tfstate" for c in (first, second)))
    assert [json.loads(b)["backend"]["config"]["path"] for b in backends] == sorted(
        str(settings.workdir / "iac-state" / "shop" / env / "terraform.tfstate") for env in ("production", "staging"))


def test_the_operators_cli_configuration_wins_over_the_mirror_setting(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    own = tmp_path / "own.tfrc"
    own.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    settings = settings.with_(terraform_cli_config=own, terraform_mirror=tmp_path / "not-a-mirror")
    ctx = context(shop(tmp_path), settings, redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert result.passed, result.summary
    said = [e.data.get("message", "") for e in ctx.bus.replay(ctx.run.id)]
    assert any(f"providers from the CLI configuration {own}" in m for m in said), said


def test_a_mirror_without_the_provider_fails_init_saying_where_providers_come_from(
        tmp_path: Path, settings: Settings, redis: Redis, moto: str) -> None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    ctx = context(shop(tmp_path), settings.with_(terraform_mirror=empty, terraform_cli_config=None), redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert not result.passed
    assert "`terraform init` failed" in result.summary and "hashicorp/aws" in result.summary
    assert f"providers come from the mirror {empty}" in result.summary and "scripts/terraform-mirror" in result.summary


def test_a_mirror_setting_that_is_not_a_directory_is_refused(tmp_path: Path, settings: Settings,
                                                             redis: Redis) -> None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    ctx = context(shop(tmp_path), settings.with_(terraform_mirror=tmp_path / "nowhere", terraform_cli_config=None),
                  redis)
    result = iac.run(ctx)
    assert not result.passed and "ORCHESTRA_TERRAFORM_MIRROR names" in result.summary
    assert "run scripts/terraform-mirror" in result.summary


REPO_TF = """\
variable "aws_endpoint" {
  type = string
}

provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  endpoints {
    ec2 = var.aws_endpoint
  }
}

data "aws_vpc" "shared" {
  id = "vpc-0123456789abcdef0"
}
"""


def test_a_plan_that_fails_on_the_provider_says_so_with_file_and_line(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    repo = shop(tmp_path)
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text(REPO_TF)
    ctx = context(repo, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert not result.passed and "generated" not in result.data
    assert result.data["files"] == ["infra/main.tf"]
    assert "`terraform plan` failed" in result.summary and "on infra/main.tf line 15" in result.summary
    assert "InvalidVpcID.NotFound" in result.summary and "nothing was changed" in result.summary
