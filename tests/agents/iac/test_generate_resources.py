"""resources: in devops_orchestra.yaml: S3 buckets and an RDS database generated into s3.tf and rds.tf, refused
(with file and line) wherever nothing would generate them, planned and applied with the real terraform and AWS
provider against a real moto_server, checked through boto3."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from redis import Redis

from agents.iac import stage as iac
from agents.iac.generate import Spec, render, spec_for, write
from orchestra.config import load_config
from orchestra.config.loader import parse_config
from orchestra.errors import ConfigError
from orchestra.settings import Settings
from tests.agents.iac.test_plan import after, context, planned, shop
from tests.support.moto import aws_env, session

BUCKETS = ("resources:\n  buckets:\n    - name: shop-uploads-{env}\n    - name: shop-logs-{env}\n"
           "      versioning: false\n")
DATABASE = "  database:\n    engine: postgres\n    size: db.t3.small\n    storage_gb: 30\n"
PASSWORD = "s3cr3t-Pa55word-from-ssm"


def configured(repo: Path, resources: str) -> Path:
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text() + "\n" + resources)
    return repo


def refused(text: str, resources: str, repo_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config(text + "\n" + resources, filename="devops_orchestra.yaml", repo_dir=repo_dir)
    return str(error.value)


def tf_env(ctx_folder: Path, settings: Settings) -> dict[str, str]:
    """The test's own terraform environment (the stage's CLI configuration and plugin cache, AWS from aws_env)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(ctx_folder), "CHECKPOINT_DISABLE": "1",
            "TF_CLI_CONFIG_FILE": str(ctx_folder.parent / "terraform.rc"),
            "TF_PLUGIN_CACHE_DIR": str(settings.cache / "terraform-plugins"),
            **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}


def terraform(folder: Path, env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["terraform", *args], cwd=folder, env=env, input=stdin, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_each_misconfiguration_is_refused_with_file_line_and_what_to_write(tmp_path: Path) -> None:
    ecs = shop(tmp_path, "ecs")
    text = (ecs / "devops_orchestra.yaml").read_text()
    line = len(text.splitlines()) + 2  # the line of `resources:` once appended
    assert f"devops_orchestra.yaml:{line + 1}: resources.databse: unknown key (did you mean `database`?)" in refused(
        text, "resources:\n  databse:\n    engine: postgres\n")
    hostile = refused(text, 'resources:\n  buckets:\n    - name: "up-{env}\\"}\\n${file(\\"/etc/passwd\\")}"\n')
    assert f":{line + 2}: resources.buckets[0].name:" in hostile and "is not an S3 bucket name" in hostile
    assert "is not allowed; use one of postgres, mysql" in refused(
        text, "resources:\n  database:\n    engine: \"postgres'; $(reboot) #\"\n")
    assert "is not an RDS instance class" in refused(text, "resources:\n  database:\n    engine: mysql\n"
                                                           "    instance_class: 'db.t3.micro\"'\n")
    assert "put {env} in it, e.g. shop-uploads-{env}" in refused(text, "resources:\n  buckets:\n"
                                                                       "    - name: shop-uploads\n")
    assert "names a bucket twice" in refused(text, "resources:\n  buckets:\n    - name: a-{env}\n    - name: a-{env}\n")
    assert "must be at least 20" in refused(text, "resources:\n  database:\n    engine: mysql\n    storage_gb: 5\n")
    docker = refused(text.replace("runtime: ecs", "runtime: docker"), BUCKETS)
    assert f"devops_orchestra.yaml:{line}: resources: not supported yet: resources without a `runtime: ecs`" in docker
    lam = refused(text.replace("runtime: ecs", "runtime: lambda"), "resources:\n" + DATABASE)
    assert "resources.database without a `runtime: ecs` or `ec2` service" in lam
    (ecs / "infra").mkdir()
    (ecs / "infra" / "main.tf").write_text("")
    assert "has its own Terraform at `infra/`" in refused(text, BUCKETS, repo_dir=ecs)


def test_buckets_and_database_get_their_own_files_and_outputs(tmp_path: Path) -> None:
    spec_ecs = load_config(configured(shop(tmp_path / "e", "ecs"), BUCKETS + DATABASE))
    spec = spec_for(spec_ecs, "production", ["frontend"])  # project-wide: whichever services the run deploys
    assert spec.buckets == {"shop-uploads-production": {"versioning": True},
                            "shop-logs-production": {"versioning": False}}
    assert spec.database == {"identifier": "shop-production-db", "engine": "postgres", "instance_class": "db.t3.small",
                             "storage_gb": 30, "port": 5432, "password_parameter": "/shop/production/database/password"}
    files = render(spec)
    assert {"s3.tf", "rds.tf", "network.tf"} <= set(files)
    assert 'output "buckets"' in files["outputs.tf"] and 'output "database_endpoint"' in files["outputs.tf"]
    assert "password" not in files["outputs.tf"] and PASSWORD not in "".join(files.values())
    lam = spec_for(load_config(configured(shop(tmp_path / "l", "lambda"), BUCKETS)), "staging")
    assert sorted(render(lam)) == ["ecr.tf", "lambda.tf", "logs.tf", "outputs.tf", "provider.tf", "s3.tf",
                                   "variables.tf"]  # no VPC for buckets alone
    plain = render(spec_for(load_config(shop(tmp_path / "p", "ecs")), "staging"))
    assert "s3.tf" not in plain and "rds.tf" not in plain and "buckets" not in plain["outputs.tf"]


def test_a_hostile_bucket_key_reaches_terraform_as_exactly_itself(tmp_path: Path, settings: Settings,
                                                                  provider_mirror: Path) -> None:
    """Past the configuration's refusal (a Spec made directly): hcl.py quotes it, Terraform reads it back whole."""
    hostile = 'x"}\nresource "aws_s3_bucket" "evil" { bucket = "${file("/etc/passwd")}" }\n%{ if true }y%{ endif }'
    spec = Spec(project="shop", environment="staging", region="us-east-1", buckets={hostile: {"versioning": True}})
    folder = tmp_path / "generated"
    write(render(spec), folder)
    (tmp_path / "terraform.rc").write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    env = tf_env(folder, settings)
    terraform(folder, env, "fmt", "-check")
    terraform(folder, env, "init", "-input=false", f"-backend-config=path={tmp_path / 'state'}")
    terraform(folder, env, "validate")
    shown = terraform(folder, env, "console", stdin="jsonencode(keys(var.buckets))\n")
    assert json.loads(json.loads(shown)) == [hostile]
    assert "evil" not in terraform(folder, env, "providers")


def test_buckets_are_planned_applied_into_moto_and_read_back_through_boto3(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    settings = settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None)
    ctx = context(configured(shop(tmp_path, "lambda"), BUCKETS), settings, redis)
    with aws_env(moto):
        result = iac.run(ctx)
        assert result.passed, result.summary
        assert "aws_s3_bucket ×2" in result.summary and "aws_s3_bucket_public_access_block ×2" in result.summary
        folder = settings.run_dir(ctx.run.id) / "infrastructure" / "generated"
        env = tf_env(folder, settings)
        terraform(folder, env, "apply", "-input=false", "-auto-approve", "orchestra.tfplan")
        outputs = json.loads(terraform(folder, env, "output", "-json"))
    assert outputs["buckets"]["value"] == {"shop-uploads-staging": "shop-uploads-staging",
                                           "shop-logs-staging": "shop-logs-staging"}
    s3 = session(moto).client("s3", endpoint_url=moto)
    for name, versioned in (("shop-uploads-staging", True), ("shop-logs-staging", False)):
        rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        assert (s3.get_bucket_versioning(Bucket=name).get("Status") == "Enabled") is versioned
        grants = s3.get_bucket_acl(Bucket=name)["Grants"]
        assert all("URI" not in g["Grantee"] for g in grants)  # no AllUsers / AuthenticatedUsers grant


def test_the_database_plans_private_encrypted_and_with_its_password_only_from_ssm(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    settings = settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None)
    ctx = context(configured(shop(tmp_path, "ecs"), "resources:\n" + DATABASE), settings, redis)
    with aws_env(moto):
        missing = iac.run(ctx)  # no password put in SSM yet: the plan fails naming the parameter
        assert not missing.passed and "/shop/staging/database/password" in missing.summary, missing.summary
        assert "rds.tf line" in missing.summary and "as a SecureString" in missing.summary
        session(moto).client("ssm", endpoint_url=moto).put_parameter(
            Name="/shop/staging/database/password", Value=PASSWORD, Type="SecureString")
        result = iac.run(ctx)
    assert result.passed, result.summary
    assert "aws_db_instance ×1" in result.summary and "aws_db_subnet_group ×1" in result.summary
    folder = settings.run_dir(ctx.run.id) / "infrastructure" / "generated"
    plan = planned(ctx, folder)
    [db] = after(plan, "aws_db_instance")
    assert (db["storage_encrypted"], db["publicly_accessible"], db["deletion_protection"]) == (True, False, True)
    assert db["iam_database_authentication_enabled"] is True
    assert db["enabled_cloudwatch_logs_exports"] == ["postgresql", "upgrade"]
    assert (db["engine"], db["instance_class"], db["allocated_storage"], db["port"]) == ("postgres", "db.t3.small",
                                                                                          30, 5432)
    [change] = [c for c in plan["resource_changes"] if c["type"] == "aws_db_instance"]
    assert change["change"]["after_sensitive"]["password"] is True
    [group] = [c["change"]["after"] for c in plan["resource_changes"] if c["address"] == "aws_security_group.database"]
    assert [(r["from_port"], r["cidr_blocks"]) for r in group["ingress"]] == [(5432, [])]  # from the tasks only
    events = json.dumps([e.model_dump(mode="json") for e in ctx.bus.replay(ctx.run.id)])
    on_disk = "".join(p.read_text() for p in folder.glob("*.tf"))
    assert PASSWORD not in events and PASSWORD not in on_disk and PASSWORD not in result.summary


@pytest.mark.slow
def test_the_database_is_applied_into_moto_with_the_password_from_ssm(
        tmp_path: Path, settings: Settings, provider_mirror: Path, moto: str) -> None:
    """The generated files as the stage writes them (the stage's checks are the test above), applied: the database
    and what it needs (VPC, private subnets, security groups), not the ALB and ECS services (slow in moto)."""
    config = load_config(configured(shop(tmp_path, "ecs"), "resources:\n" + DATABASE.replace("postgres", "mysql")))
    folder = tmp_path / "infrastructure" / "generated"
    write(render(spec_for(config, "staging")), folder)
    (folder.parent / "terraform.rc").write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    with aws_env(moto):
        session(moto).client("ssm", endpoint_url=moto).put_parameter(
            Name="/shop/staging/database/password", Value=PASSWORD, Type="SecureString", Overwrite=True)
        env = tf_env(folder, settings)
        terraform(folder, env, "init", "-input=false", f"-backend-config=path={tmp_path / 'state'}")
        terraform(folder, env, "apply", "-input=false", "-auto-approve", f"-var=aws_endpoint={moto}",
                  "-target=aws_db_instance.main")
        outputs = terraform(folder, env, "output", "-json")
    rds = session(moto).client("rds", endpoint_url=moto)
    [db] = rds.describe_db_instances(DBInstanceIdentifier="shop-staging-db")["DBInstances"]
    assert (db["Engine"], db["StorageEncrypted"], db["PubliclyAccessible"]) == ("mysql", True, False)
    assert db["DeletionProtection"] is True and db["MasterUsername"] == "orchestra"
    endpoint = json.loads(outputs)["database_endpoint"]
    assert endpoint["value"] == f"{db['Endpoint']['Address']}:{db['Endpoint']['Port']}" and not endpoint["sensitive"]
    assert db["Endpoint"]["Port"] == 3306 and PASSWORD not in outputs
    subnets = [s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]]
    ec2 = session(moto).client("ec2", endpoint_url=moto)
    named = {t["Value"] for s in ec2.describe_subnets(SubnetIds=subnets)["Subnets"] for t in s.get("Tags", [])
             if t["Key"] == "Name"}
    assert named == {"shop-staging-private-0", "shop-staging-private-1"}
