"""The ``resources:`` section of devops_orchestra.yaml: S3 buckets and one RDS database for the services.

They exist only as generated Terraform (agents/iac/generate: ``s3.tf``, ``rds.tf``), so the section is
refused wherever nothing would generate them: with no ``runtime: ecs``, ``ec2`` or ``lambda`` service (the iac
stage then generates nothing), a database without an ``ecs`` or ``ec2`` service (the only code that runs inside
the VPC the database is private to: the tasks and instances share its security group), or Terraform of the
repository's own at ``infrastructure.path`` (used as it is).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator

from orchestra.config.environments import StrictModel

ENV_PLACEHOLDER = "{env}"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.{}-]*[a-z0-9}]$")
_INSTANCE_CLASS = re.compile(r"^db\.[a-z0-9]+\.[a-z0-9]+$")
ENGINE_PORTS = {"postgres": 5432, "mysql": 3306}


class Bucket(StrictModel):
    """An S3 bucket ``name`` (``{env}`` replaced by the environment): encrypted, never public."""

    name: str
    versioning: bool = Field(default=True, strict=True)

    @field_validator("name")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        bare = value.replace(ENV_PLACEHOLDER, "env")
        if not _BUCKET.match(value) or "{" in bare or "}" in bare or ".." in value or not 3 <= len(bare) <= 63:
            raise ValueError(f"`{value[:80]}` is not an S3 bucket name: 3-63 lowercase letters, digits, '.' and "
                             "'-' (start and end with a letter or digit), with {env} where the environment goes, "
                             "e.g. shop-uploads-{env}")
        if ENV_PLACEHOLDER not in value:
            raise ValueError(f"bucket `{value}` is the same in every environment, and S3 names are global: each "
                             "environment's Terraform would make it again; put {env} in it, e.g. "
                             f"{value}-{{env}}")
        return value


class Database(StrictModel):
    """One RDS instance in the private subnets, encrypted, reachable from the ECS tasks and EC2 instances only. Its
    master password is read from the SSM parameter ``/<project>/<env>/database/password`` (a SecureString the
    operator puts there), never written in the files."""

    engine: Literal["postgres", "mysql"]
    instance_class: str = Field(default="db.t3.micro", validation_alias=AliasChoices("instance_class", "size"))
    storage_gb: int = Field(default=20, ge=20, le=16384, strict=True)

    @field_validator("instance_class")
    @classmethod
    def _instance_class(cls, value: str) -> str:
        if not _INSTANCE_CLASS.match(value):
            raise ValueError(f"`{value[:80]}` is not an RDS instance class; write it as AWS names it, e.g. "
                             "db.t3.micro or db.m6g.large")
        return value


class Resources(StrictModel):
    """What the services use besides their own runtime, generated into Terraform."""

    buckets: list[Bucket] = Field(default_factory=list)
    database: Database | None = None
    # What the templates cannot make, in words: the configured model writes it as extra.tf, which is kept only
    # if it passes the same checks (agents/iac/generate/llm_fill.py); without a model the stage says it was not made
    extra: str = Field(default="", max_length=1000)

    @field_validator("buckets")
    @classmethod
    def _each_once(cls, buckets: list[Bucket]) -> list[Bucket]:
        names = [b.name for b in buckets]
        if len(set(names)) != len(names):
            raise ValueError("resources.buckets names a bucket twice; list each bucket once")
        return buckets

    def asked(self) -> bool:
        return bool(self.buckets) or self.database is not None or bool(self.extra.strip())


def refusal(resources: Resources, runtimes: set[str], repo_dir: Path | None, infra_path: str) -> str | None:
    """Why ``resources`` cannot be generated for this configuration; None when it can (or nothing is asked)."""
    if not resources.asked():
        return None
    if not runtimes & {"ecs", "ec2", "lambda"}:
        return ("not supported yet: resources without a `runtime: ecs`, `ec2` or `lambda` service: the buckets and "
                "the database are made by the Terraform generated for AWS services, and none is generated here; "
                "move a service to ecs, ec2 or lambda, or remove resources")
    if resources.database is not None and not runtimes & {"ecs", "ec2"}:
        return ("not supported yet: resources.database without a `runtime: ecs` or `ec2` service: the database is "
                "private to the generated VPC and the Lambda functions run outside it; remove resources.database")
    if repo_dir is not None and _has_terraform(repo_dir / infra_path):
        return (f"resources cannot be generated: the repository has its own Terraform at `{infra_path}`, which is "
                "used as it is; declare the buckets and the database there and remove resources")
    return None


def _has_terraform(folder: Path) -> bool:
    return folder.is_dir() and any(".terraform" not in p.parts for p in folder.rglob("*.tf"))
