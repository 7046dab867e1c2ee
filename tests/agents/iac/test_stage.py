"""The iac stage between build and deploy: skipped when there is nothing to do, the repository's Terraform
checked with the real terraform binary, and paths that leave the repository refused."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.iac import stage as iac
from jobs.graph import PIPELINE
from orchestra.config import load_config
from orchestra.config.loader import parse_config
from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run

CONFIG = """\
project: {{name: shop}}
deployment:
  services:
    - {{name: web, path: web, port: 8000, runtime: {runtime}}}
{extra}"""
FORMATTED = 'variable "region" {\n  type    = string\n  default = "eu-west-1"\n}\n'
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


def _ctx(repo: Path, settings: Settings, redis: Redis, *, runtime: str = "docker", extra: str = "") -> AgentContext:
    (repo / "web").mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(CONFIG.format(runtime=runtime, extra=extra))
    run = Run(requested_by="U0ALICE", repo=str(repo), services=["web"], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="iac")


def test_the_iac_stage_sits_between_build_and_deploy_and_publishes_iac_ready() -> None:
    names = [s.name for s in PIPELINE.stages]
    # iac_apply (for a plan that changes something) and migrate (for a change with migrations) come before deploy
    assert names.index("build") + 1 == names.index("iac") == names.index("iac_apply") - 1 \
        == names.index("migrate") - 2 == names.index("deploy") - 3
    assert PIPELINE.stage("iac").result == EventType.IAC_READY
    assert PIPELINE.stage("iac").kinds == frozenset({"deploy", "plan"})  # a plan run: `/orchestra plan` on a PR


def test_local_services_and_no_terraform_skip_the_stage_and_say_so(tmp_path: Path, settings: Settings,
                                                                   redis: Redis) -> None:
    result = iac.run(_ctx(tmp_path, settings, redis))
    assert result.passed and result.data["skipped"]
    assert "skipped" in result.summary and "runtime docker" in result.summary and "infra/" in result.summary


def test_kubernetes_without_terraform_is_skipped_naming_the_cluster_settings(tmp_path: Path, settings: Settings,
                                                                           redis: Redis) -> None:
    result = iac.run(_ctx(tmp_path, settings, redis, runtime="kubernetes"))
    assert result.passed and result.data["skipped"]
    assert "kubernetes target uses the cluster its settings name" in result.summary
    assert "generated for ecs, ec2, lambda, cloudrun and containerapps only" in result.summary


@needs_terraform
def test_formatted_terraform_at_the_configured_path_passes(tmp_path: Path, settings: Settings,
                                                           redis: Redis) -> None:
    (tmp_path / "ops" / "tf").mkdir(parents=True)
    (tmp_path / "ops" / "tf" / "variables.tf").write_text(FORMATTED)
    result = iac.run(_ctx(tmp_path, settings, redis, extra="infrastructure: {tool: terraform, path: ops/tf}\n"))
    assert result.passed, result.summary
    assert result.data["files"] == ["ops/tf/variables.tf"] and result.data["terraform"] == "terraform"
    assert result.data["plan"]["summary"] == "0 to add, 0 to change, 0 to destroy"
    assert f"terraform {result.data['terraform_version']}: " in result.summary
    assert "fmt and validate passed" in result.summary and "nothing was applied" in result.summary


@needs_terraform
def test_invalid_terraform_fails_with_file_line_and_what_is_wrong(tmp_path: Path, settings: Settings,
                                                                  redis: Redis) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "main.tf").write_text(FORMATTED + '\noutput "url" {\n  value = var.nope\n}\n')
    result = iac.run(_ctx(tmp_path, settings, redis))
    assert not result.passed
    assert "infra/main.tf:7: Reference to undeclared input variable" in result.summary
    assert "nope" in result.summary and "plan" not in result.data


def test_no_terraform_or_tofu_on_the_path_is_a_clear_error(tmp_path: Path, settings: Settings,
                                                          redis: Redis) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "main.tf").write_text(FORMATTED)
    (tmp_path / "bin").mkdir()
    bare = settings.with_(tool_env={**settings.tool_env, "PATH": str(tmp_path / "bin")})
    result = iac.run(_ctx(tmp_path, bare, redis))
    assert not result.passed
    assert "neither `terraform` nor `tofu` is on the worker's PATH" in result.summary


@needs_terraform
def test_unformatted_terraform_fails_naming_the_file(tmp_path: Path, settings: Settings, redis: Redis) -> None:
    (tmp_path / "infra" / "modules").mkdir(parents=True)
    (tmp_path / "infra" / "main.tf").write_text(FORMATTED)
    (tmp_path / "infra" / "modules" / "net.tf").write_text('variable "x" {\ntype=string\n}\n')
    result = iac.run(_ctx(tmp_path, settings, redis))
    assert not result.passed
    assert "not formatted: infra/modules/net.tf" in result.summary and "run `terraform fmt`" in result.summary
    assert "infra/main.tf" not in result.summary


@needs_terraform
def test_terraform_that_does_not_parse_fails_with_terraforms_reason(tmp_path: Path, settings: Settings,
                                                                    redis: Redis) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "main.tf").write_text('resource "x" {\n')
    result = iac.run(_ctx(tmp_path, settings, redis))
    assert not result.passed and "could not read" in result.summary


def test_an_infrastructure_folder_linked_outside_the_repository_is_refused(tmp_path: Path, settings: Settings,
                                                                           redis: Redis) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "main.tf").write_text(FORMATTED)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "infra").symlink_to(outside)
    result = iac.run(_ctx(repo, settings, redis))
    assert not result.passed and "outside the repository" in result.summary


def test_a_terraform_file_linked_outside_the_repository_is_refused(tmp_path: Path, settings: Settings,
                                                                   redis: Redis) -> None:
    (tmp_path / "secret.tf").write_text(FORMATTED)
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    (repo / "infra" / "main.tf").symlink_to(tmp_path / "secret.tf")
    result = iac.run(_ctx(repo, settings, redis))
    assert not result.passed and "infra/main.tf leads outside the repository" in result.summary


@pytest.mark.parametrize(("tool", "message"), [("cloudformation", "not supported yet"),
                                               ("ansible", "not supported yet"),
                                               ("terrafrom", "is not an infrastructure tool")])
def test_infrastructure_tools_other_than_terraform_are_refused(tool: str, message: str) -> None:
    text = CONFIG.format(runtime="docker", extra=f"infrastructure: {{tool: {tool}}}\n")
    with pytest.raises(OrchestraError) as refused:
        parse_config(text, filename="devops_orchestra.yaml")
    assert message in str(refused.value) and "terraform" in str(refused.value)
