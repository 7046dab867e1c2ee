"""Remote state from infrastructure.backend: refused when it cannot act, and, against a real moto_server (S3 and
DynamoDB), the state kept in the configured bucket and key and locked in the table, never in the workdir, and
never in a thread or an event.

The repository's Terraform here is built-in resources only (``terraform_data``), so no provider is needed and
every step is real Terraform 1.11 with its S3 backend.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
from redis import Redis

from agents.context import AgentContext
from agents.iac import backend, drift
from agents.iac import stage as iac
from orchestra.config import load_config
from orchestra.config.loader import parse_config
from orchestra.errors import ConfigError
from orchestra.events import EventBus
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run
from tests.support.moto import REGION, aws_env

pytestmark = pytest.mark.slow
SHOP = PROJECT_ROOT / "examples" / "shop"
SECRET = "state-only-7f3a9c"  # a value that only the state holds
S3_CONFIG = ("  backend:\n    s3:\n      bucket: tf-state\n      key_prefix: teams/web/\n      region: us-east-1\n"
             "      dynamodb_table: tf-locks\n")
STATE_TF = ('terraform {\n  backend "s3" {}\n}\n\nvariable "x" {\n  type    = string\n  default = "plain"\n}\n\n'
            'resource "terraform_data" "thing" {\n  input = var.x\n}\n')
KEY = "teams/web/shop/staging/terraform.tfstate"


def repo_with(tmp_path: Path, tf: str, config_extra: str = S3_CONFIG) -> Path:
    repo = tmp_path / "shop"
    shutil.copytree(SHOP, repo)
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("  path: infra/\n", "  path: infra/\n" + config_extra))
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text(tf)
    return repo


def context(repo: Path, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="iac")


def test_the_backend_section_refuses_what_it_cannot_do_with_file_and_line() -> None:
    text = (SHOP / "devops_orchestra.yaml").read_text()
    cases = {S3_CONFIG + "      kms_key: alias/x\n": "infrastructure.backend.s3.kms_key: unknown key",
             S3_CONFIG.replace("tf-state", "My_Bucket"): "is not an S3 bucket name",
             S3_CONFIG.replace("teams/web/", "../other/"): "is not a key prefix",
             "  backend:\n    gcs: {bucket: x}\n": "infrastructure.backend.gcs: unknown key",
             S3_CONFIG.replace("      dynamodb_table: tf-locks\n", ""): "s3.dynamodb_table: is required"}
    for extra, said in cases.items():
        with pytest.raises(ConfigError) as refused:
            parse_config(text.replace("  path: infra/\n", "  path: infra/\n" + extra), filename="devops_orchestra.yaml")
        assert said in str(refused.value) and re.search(r"devops_orchestra\.yaml:5\d: ", str(refused.value))
    config = parse_config(text.replace("  path: infra/\n", "  path: infra/\n" + S3_CONFIG), filename="f")
    s3 = config.infrastructure.backend.s3
    assert s3 is not None and backend.state_key(s3, "shop", "staging") == KEY
    assert parse_config(text, filename="f").infrastructure.backend.s3 is None  # the local backend by default


@pytest.mark.parametrize("tf", ['resource "terraform_data" "thing" {}\n',
                                '# backend "s3" {}\nresource "terraform_data" "thing" {}\n',
                                'terraform {\n  backend "local" {\n    path = "x"\n  }\n}\n/* backend "s3" {} */\n'],
                         ids=["none", "commented", "local"])
def test_an_s3_backend_the_terraform_does_not_declare_is_refused(tmp_path: Path, settings: Settings, redis: Redis,
                                                                  tf: str) -> None:
    ctx = context(repo_with(tmp_path, tf), settings, redis)
    result = iac.run(ctx)
    assert not result.passed and "plan" not in result.data
    assert "infrastructure.backend.s3 is set, but the Terraform here declares no `backend \"s3\" {}`" in result.summary
    assert "or remove infrastructure.backend" in result.summary


def _aws(url: str) -> dict[str, boto3.client]:
    kw = {"endpoint_url": url, "region_name": REGION, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    return {"s3": boto3.client("s3", **kw), "dynamodb": boto3.client("dynamodb", **kw)}


@pytest.mark.parametrize("declared", ['backend "s3" {}', 'backend "local" {}'], ids=["s3", "left-to-us"])
def test_a_missing_bucket_fails_init_naming_bucket_key_and_table(tmp_path: Path, settings: Settings, redis: Redis,
                                                                 moto: str, declared: str) -> None:
    """An empty `backend "local" {}` (the generated files', committed) is given the configured S3 backend too."""
    tf = STATE_TF.replace('"plain"', '"x"').replace('backend "s3" {}', declared)
    ctx = context(repo_with(tmp_path, tf, S3_CONFIG.replace("tf-state", "no-such")), settings, redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert not result.passed
    assert f"init` with the S3 backend (s3://no-such/{KEY}, locks in tf-locks) failed" in result.summary
    assert "check that the bucket and the DynamoDB table" in result.summary


def test_state_goes_to_the_bucket_locked_in_the_table_and_never_into_events(
        tmp_path: Path, settings: Settings, redis: Redis, moto: str) -> None:
    aws = _aws(moto)
    aws["s3"].create_bucket(Bucket="tf-state")
    aws["dynamodb"].create_table(TableName="tf-locks", BillingMode="PAY_PER_REQUEST",
                                 KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                                 AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}])
    repo = repo_with(tmp_path, STATE_TF)
    first = context(repo, settings, redis)
    with aws_env(moto):
        planned = iac.run(first)
    assert planned.passed, planned.summary
    assert planned.data["state"] == f"state: s3://tf-state/{KEY} (locked in DynamoDB tf-locks)"
    assert "plan: 1 to add" in planned.summary

    # Apply as an operator would, in the stage's own working data (its backend settings): the state lands in S3.
    scratch = settings.run_dir(first.run.id) / "infrastructure"
    env = {**settings.tool_env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
           "AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "TF_DATA_DIR": str(scratch / "terraform-data"), "TF_CLI_CONFIG_FILE": str(scratch / "terraform.rc"),
           "CHECKPOINT_DISABLE": "1"}
    done = subprocess.run(["terraform", "apply", "-auto-approve", "-input=false", "-no-color", f"-var=x={SECRET}"],
                          cwd=repo / "infra", env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    state = aws["s3"].get_object(Bucket="tf-state", Key=KEY)["Body"].read().decode()
    assert SECRET in state
    locks = aws["dynamodb"].scan(TableName="tf-locks")["Items"]
    assert [item["LockID"]["S"] for item in locks] == [f"tf-state/{KEY}-md5"]  # the lock table's digest of it
    # no local state: the only *.tfstate is Terraform's record of the backend settings in its data folder
    for path in [*settings.workdir.rglob("*.tfstate"), *repo.rglob("*.tfstate")]:
        local = json.loads(path.read_text())
        assert path.parent.name == "terraform-data" and local["backend"]["type"] == "s3", path
        assert "resources" not in local and SECRET not in path.read_text()

    # The drift check reads the same state from S3 (terraform_data has nothing live: no drift).
    with aws_env(moto):
        drifted = drift.run(context(repo, settings, redis))
    assert drifted.passed and drifted.data["checked"] and "no drift" in drifted.summary, drifted.summary

    # A later run reads that state from S3 (the value changes back), and says nothing of it.
    second = context(repo, settings, redis)
    with aws_env(moto):
        replanned = iac.run(second)
    assert replanned.passed and "plan: 0 to add, 1 to change, 0 to destroy" in replanned.summary
    for run, result in ((first, planned), (second, replanned)):
        told = [result.summary, json.dumps(result.data)] + [e.model_dump_json() for e in first.bus.replay(run.run.id)]
        assert not [text for text in told if SECRET in text]


def test_generated_terraform_gets_the_s3_backend_block(tmp_path: Path, settings: Settings, redis: Redis,
                                                       provider_mirror: Path, moto: str) -> None:
    aws = _aws(moto)
    aws["s3"].create_bucket(Bucket="tf-gen")
    aws["dynamodb"].create_table(TableName="gen-locks", BillingMode="PAY_PER_REQUEST",
                                 KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                                 AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}])
    repo = tmp_path / "shop"
    shutil.copytree(SHOP, repo)
    config = repo / "devops_orchestra.yaml"
    own = S3_CONFIG.replace("tf-state", "tf-gen").replace("tf-locks", "gen-locks")
    config.write_text(config.read_text().replace("runtime: docker", "runtime: lambda")
                      .replace("  path: infra/\n", "  path: infra/\n" + own))
    ctx = context(repo, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert result.passed, result.summary
    assert result.data["state"] == f"state: s3://tf-gen/{KEY} (locked in DynamoDB gen-locks)"
    folder = settings.run_dir(ctx.run.id) / "infrastructure" / "generated"
    assert (folder / backend.OVERRIDE_FILE).read_text() == 'terraform {\n  backend "s3" {}\n}\n'
    assert not (settings.workdir / "iac-state").exists()
