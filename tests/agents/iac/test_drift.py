"""Drift with the real terraform, the real AWS provider (from the mirror) and a real moto_server: state made by a
real `terraform apply`, a resource then changed through boto3 behind Terraform's back, and the refresh-only plan
that names it, changing nothing (the drifted value is still there after, the state file is untouched)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.iac import drift
from agents.iac.terraform import prepare
from orchestra.config import load_config
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.moto import aws_env, reset, session

CONFIG = """\
project: {name: shop}
deployment:
  services:
    - {name: web, path: web, port: 8000, runtime: docker}
infrastructure: {tool: terraform, path: infra}
"""
MAIN_TF = """\
terraform {{
  backend "local" {{
    path = "{state}"
  }}
}}

variable "aws_endpoint" {{
  type = string
}}

provider "aws" {{
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  max_retries                 = 1
  endpoints {{
    ec2 = var.aws_endpoint
    sts = var.aws_endpoint
  }}
}}

resource "aws_security_group" "web" {{
  name        = "shop-web"
  description = "the shop's web tier"
  tags = {{
    team = "shop"
  }}
}}
"""


@dataclass
class Infra:
    repo: Path
    state: Path
    settings: Settings
    moto: str

    def context(self, redis: Redis, env: str = "staging") -> AgentContext:
        run = Run(kind="drift", requested_by="U0ALICE", repo=str(self.repo), env=env)
        return AgentContext(run=run, settings=self.settings, redis=redis, bus=EventBus(redis), workspace=self.repo,
                            config=load_config(self.repo), actor="drift")

    def apply(self) -> None:
        """A real `terraform apply` of the repository's files, as a team would have run it."""
        tf = prepare(self.settings, self.repo / "infra", self.repo.parent / "apply-scratch",
                     data_dir=self.repo.parent / "apply-data")
        tf.env["TF_VAR_aws_endpoint"] = self.moto
        for args in (("init", "-input=false", "-no-color"), ("apply", "-auto-approve", "-input=false", "-no-color")):
            done = tf.run(*args)
            assert done.returncode == 0, done.stderr


@pytest.fixture
def infra(tmp_path: Path, settings: Settings, provider_mirror: Path, moto: str) -> Iterator[Infra]:
    reset(moto)  # the module's moto_server, emptied for each test
    repo, state = tmp_path / "shop", tmp_path / "state" / "staging.tfstate"
    (repo / "infra").mkdir(parents=True)
    (repo / "web").mkdir()
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    (repo / "infra" / "main.tf").write_text(MAIN_TF.format(state=state))
    with aws_env(moto):
        yield Infra(repo, state, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), moto)


def _group(moto: str) -> dict:
    ec2 = session(moto).client("ec2", endpoint_url=moto)
    return ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["shop-web"]}])["SecurityGroups"][0]


@pytest.mark.slow
def test_no_state_then_no_drift_then_the_resource_changed_behind_terraforms_back(infra: Infra, redis: Redis) -> None:
    before = drift.run(infra.context(redis))
    assert before.passed and before.data["checked"] is False
    assert before.summary.startswith("staging: no state yet for the Terraform at `infra`")

    infra.apply()
    clean = drift.run(infra.context(redis))
    assert clean.passed, clean.summary
    assert clean.summary.startswith("staging: no drift: the live infrastructure matches the state")
    assert clean.data["drift"] == {"changed": {}, "deleted": []}

    group = _group(infra.moto)
    ec2 = session(infra.moto).client("ec2", endpoint_url=infra.moto)
    ec2.create_tags(Resources=[group["GroupId"]], Tags=[{"Key": "team", "Value": "someone-else"}])
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    state = hashlib.sha256(infra.state.read_bytes()).hexdigest()

    drifted = drift.run(infra.context(redis))
    assert not drifted.passed
    assert "staging: drift in 1 resource(s) of the Terraform at `infra`: aws_security_group.web changed outside " \
           "Terraform (" in drifted.summary
    changed = drifted.data["drift"]["changed"]["aws_security_group.web"]
    assert {"ingress", "tags"} <= set(changed)
    assert "someone-else" not in drifted.summary and "0.0.0.0/0" not in drifted.summary  # names, never values
    assert "nothing was applied or changed" in drifted.summary

    after = _group(infra.moto)  # the drift is still there: nothing put it back
    assert {"Key": "team", "Value": "someone-else"} in after["Tags"]
    assert [p["FromPort"] for p in after["IpPermissions"]] == [22]
    assert hashlib.sha256(infra.state.read_bytes()).hexdigest() == state
    assert not list(infra.repo.rglob(drift.DRIFT_PLAN)) and not (infra.repo / "infra" / ".terraform").exists()


@pytest.mark.slow
def test_a_resource_deleted_outside_terraform_is_named_and_an_unreachable_endpoint_changes_nothing(
        infra: Infra, redis: Redis) -> None:
    infra.apply()
    ec2 = session(infra.moto).client("ec2", endpoint_url=infra.moto)
    ec2.delete_security_group(GroupId=_group(infra.moto)["GroupId"])
    result = drift.run(infra.context(redis))
    assert not result.passed and "aws_security_group.web was deleted outside Terraform" in result.summary
    assert result.data["drift"]["deleted"] == ["aws_security_group.web"]

    state = infra.state.read_bytes()
    with aws_env("http://127.0.0.1:9"):  # nothing listens there
        result = drift.run(infra.context(redis))
    assert not result.passed and "staging: drift not checked:" in result.summary
    assert "`terraform plan -refresh-only` failed" in result.summary
    assert infra.state.read_bytes() == state


def test_generated_terraform_never_applied_has_no_state_yet(tmp_path: Path, settings: Settings, redis: Redis) -> None:
    repo = tmp_path / "shop"
    (repo / "web").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text(CONFIG.replace("runtime: docker", "runtime: ecs"))
    ctx = Infra(repo, tmp_path / "unused", settings, "").context(redis, env="production")
    result = drift.run(ctx)
    assert result.passed and result.data == {"env": "production", "checked": False, "no_state": True}
    assert result.summary == ("production: no state yet for the generated Terraform (nothing applied there): "
                              "no drift to look for")


def test_local_services_without_terraform_have_nothing_to_check(tmp_path: Path, settings: Settings,
                                                                redis: Redis) -> None:
    repo = tmp_path / "shop"
    (repo / "web").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    result = drift.run(Infra(repo, tmp_path / "unused", settings, "").context(redis))
    assert result.passed and "no Terraform at `infra` and none generated for these services" in result.summary


def test_terraform_linked_outside_the_repository_is_refused(tmp_path: Path, settings: Settings, redis: Redis) -> None:
    repo, outside = tmp_path / "shop", tmp_path / "elsewhere"
    (repo / "web").mkdir(parents=True)
    outside.mkdir()
    (outside / "main.tf").write_text('variable "x" {}\n')
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").symlink_to(outside / "main.tf")  # Terraform the repository does not hold
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    result = drift.run(Infra(repo, tmp_path / "unused", settings, "").context(redis))
    assert not result.passed and "drift not checked: infra/main.tf leads outside the repository" in result.summary
