"""What the generated Terraform is made of, read from devops_orchestra.yaml for one environment.

The names follow the deploy targets' own (``agents/deploy/targets/ecs/resources.py`` and the Lambda
target): task definition family ``<service>-<env>``, ECS services ``<service>-<env>-blue`` and ``-green``,
target groups and log groups from the environment's ``ecs`` settings (or their defaults), functions and
aliases from its ``lambda`` settings, image repositories as the build stage names them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestra.config import ProjectConfig
from orchestra.config.resources import ENGINE_PORTS, ENV_PLACEHOLDER
from orchestra.config.types import EcsCluster, LambdaFunction
from orchestra.errors import OrchestraError

DEFAULT_REGION = "us-east-1"
GENERATED_RUNTIMES = ("ecs", "lambda")
_ARN = re.compile(r"^arn:aws[a-z-]*:")


@dataclass
class Spec:
    """The generator's input: plain data, each string of it written to HCL through ``hcl.value``."""

    project: str
    environment: str
    region: str | None  # None: the region comes from AWS_REGION / AWS_DEFAULT_REGION at plan time
    cluster_name: str = ""
    secret_prefix: str = ""
    ecs_services: dict[str, dict[str, Any]] = field(default_factory=dict)
    lambda_services: dict[str, dict[str, Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)  # resources.buckets by name
    database: dict[str, Any] | None = None  # resources.database (rds.tf), None: none asked

    @property
    def name_prefix(self) -> str:
        """``shop-staging``, cut so that every AWS name built on it fits (IAM roles: 64, an ALB: 32)."""
        return f"{self.project}-{self.environment}"[:28].rstrip("-")

    @property
    def default_service(self) -> str:
        return next(iter(self.ecs_services), "")

    @property
    def repositories(self) -> list[str]:
        return sorted({s["repository"] for s in [*self.ecs_services.values(), *self.lambda_services.values()]})


def repository(project: str, service: str) -> str:
    """The ECR repository the build stage pushes ``service`` to (``agents/build/service.py``)."""
    return re.sub(r"[^a-z0-9._-]+", "-", f"{project}-{service}".lower()).strip("-.")


def spec_for(config: ProjectConfig, env: str, services: list[str] | None = None) -> Spec:
    """The generator's input for ``env``: the run's services (all when none are named) of the AWS runtimes."""
    policy = config.environment(env)
    ecs = policy.ecs or EcsCluster.model_construct(cluster="", listener="")
    lam = policy.lambda_ or LambdaFunction()
    chosen = [s for s in config.deployment.services
              if s.runtime in GENERATED_RUNTIMES and (not services or s.name in services)]
    spec = Spec(project=config.project.name, environment=env, region=ecs.region or lam.region,
                cluster_name=_cluster(ecs.cluster, config.project.name, env),
                secret_prefix=ecs.secret_prefix.replace("{env}", env))
    for priority, service in enumerate(s for s in chosen if s.runtime == "ecs"):
        spec.ecs_services[service.name] = _ecs_service(config.project.name, service.name, env, ecs,
                                                       port=service.port, health=service.health, priority=priority)
    for service in (s for s in chosen if s.runtime == "lambda"):
        spec.lambda_services[service.name] = {
            "function": _named(lam.function, service.name, env), "alias": lam.alias,
            "repository": repository(config.project.name, service.name)}
    _resources(spec, config, env)
    return spec


def _resources(spec: Spec, config: ProjectConfig, env: str) -> None:
    """``resources:`` into ``spec`` (the configuration refused what nothing would generate)."""
    for bucket in config.resources.buckets:
        name = bucket.name.replace(ENV_PLACEHOLDER, env)
        if not 3 <= len(name) <= 63:
            raise OrchestraError(f"the bucket name `{name}` in {env} is {len(name)} characters; S3 allows 3 to 63",
                                 hint="shorten resources.buckets[].name")
        spec.buckets[name] = {"versioning": bucket.versioning}
    database = config.resources.database
    if database is not None:
        identifier = re.sub(r"-+", "-", f"{spec.name_prefix}-db")
        spec.database = {
            "identifier": identifier if identifier[0].isalpha() else f"db-{identifier}"[:63],
            "engine": database.engine, "instance_class": database.instance_class, "storage_gb": database.storage_gb,
            "port": ENGINE_PORTS[database.engine],
            "password_parameter": f"/{config.project.name}/{env}/database/password"}


def _cluster(configured: str, project: str, env: str) -> str:
    if not configured:
        return f"{project}-{env}"
    if _ARN.match(configured):  # the name is the ARN's last part: arn:aws:ecs:<region>:<account>:cluster/<name>
        return configured.rsplit("/", 1)[-1]
    return configured


def _ecs_service(project: str, name: str, env: str, ecs: EcsCluster, *, port: int, health: str,
                 priority: int) -> dict[str, Any]:
    if ecs.launch_type != "FARGATE":
        raise OrchestraError(f"environments.{env}.ecs.launch_type {ecs.launch_type} cannot be generated: the "
                             "generated Terraform runs tasks on FARGATE and makes no EC2 capacity",
                             hint="set launch_type: FARGATE, or write the Terraform yourself under "
                                  "infrastructure.path")
    groups = {colour: _named(template, name, env) for colour, template in zip(("blue", "green"), ecs.target_groups,
                                                                              strict=True)}
    for group in groups.values():
        if len(group) > 32:
            raise OrchestraError(f"the target group name `{group}` of {name} in {env} is longer than AWS allows "
                                 "(32 characters)", hint=f"set environments.{env}.ecs.target_groups to "
                                                         "shorter names, e.g. [\"{service}-b\", \"{service}-g\"]")
    return {"port": port, "health": health, "cpu": ecs.cpu or 256, "memory": ecs.memory or 512,
            "repository": repository(project, name), "log_group": _named(ecs.log_group, name, env),
            "target_groups": groups, "path_pattern": f"/{name}/*", "priority": priority}


def _named(template: str, service: str, env: str) -> str:
    return template.replace("{service}", service).replace("{env}", env)
