"""The typed model of devops_orchestra.yaml: the whole file, its deployment section and services.

The other sections (project, build, testing, infrastructure, secrets, rollback, observability, chatops)
are in :mod:`orchestra.config.sections`; their names are importable from here too.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from orchestra.config.environments import EnvironmentPolicy, Environments, Strategy, StrictModel
from orchestra.config.graph import check_services, topological_order
from orchestra.config.identities import Identities
from orchestra.config.migrations import Migrations
from orchestra.config.paths import RepoPath
from orchestra.config.resources import Resources
from orchestra.config.resources import refusal as resources_refusal
from orchestra.config.risk_policy import RiskPolicy, rising_to_100
from orchestra.config.sections import (
    DEFAULT_DOCKERFILE,
    Alert,
    Build,
    ChatOps,
    Infrastructure,
    Observability,
    Project,
    Rollback,
    RollbackThreshold,
    Secrets,
    Testing,
)
from orchestra.config.types import Duration, EnvKey, Name, UrlPath, did_you_mean
from orchestra.errors import NotFound

__all__ = ["CONFIG_FILENAME", "RUNTIMES", "Alert", "BlueGreen", "Build", "Canary", "ChatOps", "Deployment",
           "EnvVar", "Infrastructure", "Observability", "Project", "ProjectConfig", "Rollback",
           "RollbackThreshold", "Secrets", "ServiceConfig", "Testing"]

CONFIG_FILENAME = "devops_orchestra.yaml"


class EnvVar(StrictModel):
    key: EnvKey
    value: str

    @field_validator("value", mode="before")
    @classmethod
    def _scalar_to_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if isinstance(value, int | float) else value


RUNTIMES = ("docker", "kubernetes", "ecs", "ec2", "lambda")  # each has a target in agents/deploy/targets
TERRAFORM_ONLY_RUNTIMES = ("cloudrun", "containerapps")  # Terraform generated and checked, no deploy target


class ServiceConfig(StrictModel):
    """One deployable service: its folder, port, health check and dependencies."""

    name: Name
    path: RepoPath | None = None
    runtime: str = "docker"
    port: int = Field(default=5000, ge=1, le=65535)
    health: UrlPath = "/health"
    metrics: UrlPath = "/metrics"
    depends_on: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    dockerfile: RepoPath | None = None  # relative to ``path``
    replicas: int = Field(default=1, ge=1, le=50)
    migrations: Migrations = Field(default_factory=Migrations)  # how the migrate stage runs its migrations

    @field_validator("runtime")
    @classmethod
    def _supported_runtime(cls, value: str) -> str:
        if value in RUNTIMES or value in TERRAFORM_ONLY_RUNTIMES:
            return value
        supported = ("`docker` (containers on this host behind nginx), `kubernetes` (a Deployment per version), "
                     "`ecs` (an ECS service per colour behind an ALB), `ec2` (an Auto Scaling group per colour "
                     "behind an ALB) or `lambda` (a version per deploy behind an alias)")
        known = (*RUNTIMES, *TERRAFORM_ONLY_RUNTIMES)
        raise ValueError(f"`{value}` is not a runtime{did_you_mean(value, known)}; use {supported}, or `cloudrun` / "
                         "`containerapps` (Terraform generated and checked for Google Cloud Run or Azure Container "
                         "Apps, not applied or deployed here)")

    @field_validator("replicas")
    @classmethod
    def _one_container_on_docker(cls, value: int, info: ValidationInfo) -> int:
        runtime = info.data.get("runtime", "docker")
        if value > 1 and runtime in ("docker", "lambda"):
            what = "one container per version on this host" if runtime == "docker" else "Lambda scales itself"
            raise ValueError(f"not supported yet: replicas = {value} on runtime `{runtime}` ({what}); "
                             "supported: 1, or runtime `kubernetes`, `ecs` or `ec2` for more")
        return value

    @field_validator("metrics")
    @classmethod
    def _scraped_only_on_kubernetes(cls, value: str, info: ValidationInfo) -> str:
        runtime = info.data.get("runtime")
        if value == "/metrics" or runtime in (None, "kubernetes"):  # None: the runtime itself is wrong
            return value
        why = ("Prometheus scrapes /metrics of each container on this host" if runtime == "docker"
               else "nothing is deployed there from here" if runtime in TERRAFORM_ONLY_RUNTIMES
               else "the canary judge reads CloudWatch, nothing scrapes the service")
        raise ValueError(f"not supported yet: metrics = {value} on runtime `{runtime}` ({why}); supported: "
                         "/metrics, or runtime `kubernetes` (the pods' prometheus.io/path annotation)")

    @field_validator("env", mode="before")
    @classmethod
    def _mapping_to_pairs(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [{"key": k, "value": v} for k, v in value.items()]
        return value

    def env_dict(self) -> dict[str, str]:
        return {item.key: item.value for item in self.env}


class Canary(StrictModel):
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100])
    analysis_interval: Duration = 60.0

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: list[int]) -> list[int]:
        return rising_to_100(steps)


class BlueGreen(StrictModel):
    keep_previous: Duration = 3600.0


class Deployment(StrictModel):
    type: Literal["cloud", "on-premise", "hybrid", "local"] = "local"
    provider: Literal["aws", "gcp", "azure", "custom", "local"] = "local"
    strategy: Strategy = "blue-green"
    region: str = "us-west-2"
    services: list[ServiceConfig] = Field(min_length=1)
    canary: Canary = Field(default_factory=Canary)
    blue_green: BlueGreen = Field(default_factory=BlueGreen)

    @field_validator("type", "provider")
    @classmethod
    def _only_this_host(cls, value: str, info: ValidationInfo) -> str:
        supported = {"type": ("local", "on-premise"), "provider": ("local",)}[str(info.field_name)]
        if value not in supported:
            raise ValueError(f"not supported yet: deployment.{info.field_name} = {value}; supported: "
                             f"{' or '.join(supported)} (where a service runs is its `runtime`: docker, "
                             "kubernetes, ecs, ec2 or lambda, with the environment's kubernetes/ecs/ec2/lambda "
                             "settings)")
        return value

    @field_validator("region")
    @classmethod
    def _region_is_per_environment(cls, value: str) -> str:
        if value != "us-west-2":
            raise ValueError(f"not supported yet: deployment.region = {value}; supported: the default "
                             "us-west-2, which nothing reads: set environments.<env>.ecs.region, ec2.region or "
                             "lambda.region (or AWS_REGION) for the region AWS targets use")
        return value

    @model_validator(mode="after")
    def _service_graph(self) -> Deployment:
        check_services(self.services)
        return self


class ProjectConfig(StrictModel):
    """The whole devops_orchestra.yaml, every default filled in."""

    project: Project
    build: Build = Field(default_factory=Build)
    testing: Testing = Field(default_factory=Testing)
    deployment: Deployment
    infrastructure: Infrastructure = Field(default_factory=Infrastructure)
    resources: Resources = Field(default_factory=Resources)  # generated into Terraform (agents/iac/generate)
    secrets: Secrets = Field(default_factory=Secrets)
    rollback: Rollback = Field(default_factory=Rollback)
    observability: Observability = Field(default_factory=Observability)
    chatops: ChatOps = Field(default_factory=ChatOps)
    risk: RiskPolicy = Field(default_factory=RiskPolicy)  # policy: read from the trusted source
    environments: Environments = Field(default_factory=lambda: Environments.model_validate({}))
    identities: Identities = Field(default_factory=Identities)
    _source: Path | None = PrivateAttr(default=None)
    _repo_dir: Path | None = PrivateAttr(default=None)

    @field_validator("resources")
    @classmethod
    def _resources_are_generated(cls, value: Resources, info: ValidationInfo) -> Resources:
        deployment, infrastructure = info.data.get("deployment"), info.data.get("infrastructure")
        if deployment is None or infrastructure is None:  # their own errors are reported
            return value
        repo_dir = (info.context or {}).get("repo_dir")
        why = resources_refusal(value, {s.runtime for s in deployment.services}, Path(repo_dir) if repo_dir else None,
                                infrastructure.path)
        if why:
            raise ValueError(why)
        return value

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ProjectConfig:
        repo_dir = (info.context or {}).get("repo_dir")
        self._repo_dir = Path(repo_dir) if repo_dir else None
        single = len(self.deployment.services) == 1
        for service in self.deployment.services:
            if service.path is None:
                service.path = _default_path(service.name, self._repo_dir, single)
            if service.dockerfile is None and PurePosixPath(self.build.dockerfile) != PurePosixPath(DEFAULT_DOCKERFILE):
                service.dockerfile = self.build.dockerfile  # a service without its own uses build.dockerfile
        for name in self.environments.names():
            policy = self.environments.get(name)
            if policy.strategy is None:
                policy.strategy = self.deployment.strategy
        return self

    @property
    def source(self) -> Path | None:
        """The file this came from; None when inferred from the repository."""
        return self._source

    @property
    def repo_dir(self) -> Path | None:
        return self._repo_dir

    def service_names(self) -> list[str]:
        return [s.name for s in self.deployment.services]

    def service(self, name: str) -> ServiceConfig:
        """The named service; NotFound with a suggestion otherwise."""
        for service in self.deployment.services:
            if service.name == name:
                return service
        names = self.service_names()
        raise NotFound(f"unknown service `{name}`{did_you_mean(name, names)}",
                       hint=f"services in {CONFIG_FILENAME}: {', '.join(names)}")

    def environment(self, name: str) -> EnvironmentPolicy:
        """The policy of an environment (aliases accepted), defaults filled in."""
        return self.environments.get(name)

    def environments_for_branch(self, branch: str) -> list[str]:
        """The environments a push to ``branch`` deploys to, in promotion order (development first)."""
        return [n for n in reversed(self.environments.names()) if self.environment(n).triggers_on(branch)]

    def service_paths(self) -> dict[str, str]:
        """Each service's folder in the repository ("." for the root)."""
        return {s.name: s.path or "." for s in self.deployment.services}

    def deploy_order(self, names: Iterable[str] | None = None) -> list[str]:
        """``names`` (default: all services) ordered so that dependencies come first."""
        wanted = self.service_names() if names is None else [self.service(n).name for n in names]
        return topological_order(self.deployment.services, wanted)

    def service_dir(self, name: str) -> Path:
        """Where a service's code lives (relative to the repository when its folder is unknown)."""
        path = Path(self.service(name).path or ".")
        return self._repo_dir / path if self._repo_dir else path

    def strategy(self, env: str) -> str:
        return self.environment(env).strategy or self.deployment.strategy

    def summary(self) -> str:
        """One line: project, services in deploy order, environments."""
        approval = [n for n in self.environments.names() if self.environment(n).approval_required]
        return (f"project {self.project.name}: services {', '.join(self.deploy_order())}; "
                f"environments {', '.join(self.environments.names())}"
                f" (approval required: {', '.join(approval) or 'none'})")


def _default_path(name: str, repo_dir: Path | None, single: bool) -> str:
    if repo_dir is not None:
        return name if (repo_dir / name).is_dir() else "."
    return "." if single else name



