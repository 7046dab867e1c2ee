"""What the generated Terraform is made of, read from devops_orchestra.yaml for one environment.

The names follow the deploy targets' own (``agents/deploy/targets/ecs/resources.py``, the EC2 and the Lambda
targets): task definition family ``<service>-<env>``, ECS services ``<service>-<env>-blue`` and ``-green``,
the EC2 base launch template ``<service>-<env>`` and Auto Scaling groups ``<service>-<env>-blue`` and
``-green``, target groups and log groups from the environment's ``ecs`` / ``ec2`` settings (or their
defaults), functions and aliases from its ``lambda`` settings, image repositories as the build stage names them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestra.config import ProjectConfig
from orchestra.config.resources import ENGINE_PORTS, ENV_PLACEHOLDER
from orchestra.config.types import Ec2Fleet, EcsCluster, LambdaFunction
from orchestra.errors import OrchestraError

DEFAULT_REGION = "us-east-1"
GENERATED_RUNTIMES = ("ecs", "ec2", "lambda")
_ARN = re.compile(r"^arn:aws[a-z-]*:")


@dataclass
class Spec:
    """The generator's input: plain data, each string of it written to HCL through ``hcl.value``."""

    project: str
    environment: str
    region: str | None  # None: the region comes from AWS_REGION / AWS_DEFAULT_REGION at plan time
    cluster_name: str = ""
    secret_prefix: str = ""
    ec2_secret_prefix: str = ""  # ec2.secret_prefix, {env} replaced: what the instance role may read
    ecs_services: dict[str, dict[str, Any]] = field(default_factory=dict)
    ec2_services: dict[str, dict[str, Any]] = field(default_factory=dict)
    lambda_services: dict[str, dict[str, Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)  # resources.buckets by name
    database: dict[str, Any] | None = None  # resources.database (rds.tf), None: none asked

    @property
    def name_prefix(self) -> str:
        """``shop-staging``, cut so that every AWS name built on it fits (IAM roles: 64, an ALB: 32)."""
        return f"{self.project}-{self.environment}"[:28].rstrip("-")

    @property
    def default_service(self) -> str:
        """The web service (ecs or ec2) the listener's default action serves: the one of priority 0."""
        web = {**self.ecs_services, **self.ec2_services}
        return min(web, key=lambda name: web[name]["priority"], default="")

    @property
    def repositories(self) -> list[str]:
        services = [*self.ecs_services.values(), *self.ec2_services.values(), *self.lambda_services.values()]
        return sorted({s["repository"] for s in services})


def repository(project: str, service: str) -> str:
    """The ECR repository the build stage pushes ``service`` to (``agents/build/service.py``)."""
    return re.sub(r"[^a-z0-9._-]+", "-", f"{project}-{service}".lower()).strip("-.")


def spec_for(config: ProjectConfig, env: str, services: list[str] | None = None) -> Spec:
    """The generator's input for ``env``: the run's services (all when none are named) of the AWS runtimes."""
    policy = config.environment(env)
    ecs = policy.ecs or EcsCluster.model_construct(cluster="", listener="")
    ec2 = policy.ec2 or Ec2Fleet.model_construct(listener="")
    lam = policy.lambda_ or LambdaFunction()
    chosen = [s for s in config.deployment.services
              if s.runtime in GENERATED_RUNTIMES and (not services or s.name in services)]
    spec = Spec(project=config.project.name, environment=env, region=ecs.region or ec2.region or lam.region,
                cluster_name=_cluster(ecs.cluster, config.project.name, env),
                secret_prefix=ecs.secret_prefix.replace("{env}", env),
                ec2_secret_prefix=ec2.secret_prefix.replace("{env}", env))
    # One listener serves the ecs and ec2 services alike: priority 0 gets its default action, the others a rule.
    for priority, service in enumerate(s for s in chosen if s.runtime in ("ecs", "ec2")):
        if service.runtime == "ecs":
            spec.ecs_services[service.name] = _ecs_service(config.project.name, service.name, env, ecs,
                                                           port=service.port, health=service.health, priority=priority)
        else:
            spec.ec2_services[service.name] = {
                **_web(config.project.name, service.name, env, ec2.target_groups, "ec2", port=service.port,
                       health=service.health, priority=priority),
                "log_group": _named(ec2.log_group, service.name, env), "instance_type": ec2.instance_type,
                "replicas": service.replicas}
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
    web = _web(project, name, env, ecs.target_groups, "ecs", port=port, health=health, priority=priority)
    return {"port": port, "health": health, "cpu": ecs.cpu or 256, "memory": ecs.memory or 512,
            "repository": web["repository"], "log_group": _named(ecs.log_group, name, env),
            "target_groups": web["target_groups"], "path_pattern": web["path_pattern"], "priority": priority}


def _web(project: str, name: str, env: str, target_groups: tuple[str, str], settings: str, *, port: int,
         health: str, priority: int) -> dict[str, Any]:
    """What an ecs or ec2 service has behind the load balancer: two target groups, a path rule, a repository."""
    groups = {colour: _named(template, name, env) for colour, template in zip(("blue", "green"), target_groups,
                                                                              strict=True)}
    for group in groups.values():
        if len(group) > 32:
            raise OrchestraError(f"the target group name `{group}` of {name} in {env} is longer than AWS allows "
                                 "(32 characters)", hint=f"set environments.{env}.{settings}.target_groups to "
                                                         "shorter names, e.g. [\"{service}-b\", \"{service}-g\"]")
    return {"port": port, "health": health, "repository": repository(project, name), "target_groups": groups,
            "path_pattern": f"/{name}/*", "priority": priority}


def _named(template: str, service: str, env: str) -> str:
    return template.replace("{service}", service).replace("{env}", env)
