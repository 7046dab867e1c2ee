"""Which target serves a service: its ``runtime`` (``docker``: this host; ``kubernetes``: a cluster;
``ecs``: an ECS cluster behind an ALB; ``ec2``: Auto Scaling groups behind an ALB; ``lambda``: a function's
versions behind an alias).

:class:`Targets` opens each target the first time a service needs it (no Docker engine is touched for
a group that runs only on Kubernetes) and closes what it opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
from redis import Redis

from agents.deploy.targets.base import DeployOutcome, DeployTarget, Plan, Report
from agents.deploy.targets.local import LocalTarget
from agents.deploy.targets.state import LiveState, Release
from agents.iac import outputs
from orchestra.config import ProjectConfig
from orchestra.config.model import TERRAFORM_ONLY_RUNTIMES
from orchestra.errors import StageFailed
from orchestra.settings import Settings

if TYPE_CHECKING:
    from agents.deploy.strategies import Judge
    from agents.deploy.targets.alb import AlbColoursTarget
    from orchestra.config.types import Ec2Fleet, EcsCluster

RUNTIMES = ("docker", "kubernetes", "ecs", "ec2", "lambda")


def lists_scrape_targets(runtime: str) -> bool:
    """Does Prometheus need us to list this runtime's releases (file_sd)? The local target's, yes; a
    cluster's Prometheus discovers pods by their ``orchestra.*`` labels (kubernetes_sd)."""
    return runtime == "docker"


class Targets:
    """The targets of one environment, opened on demand."""

    def __init__(self, settings: Settings, redis: Redis, config: ProjectConfig, env: str, *,
                 docker_client: docker.DockerClient | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.config = config
        self.env = env
        self._docker_client = docker_client
        self._open: dict[str, DeployTarget] = {}

    def for_service(self, service: str) -> DeployTarget:
        return self.for_runtime(self.config.service(service).runtime)

    def for_runtime(self, runtime: str) -> DeployTarget:
        if runtime not in self._open:
            self._open[runtime] = WithSecrets(self._make(runtime), self.config, self.settings.secrets_file)
        return self._open[runtime]

    def _make(self, runtime: str) -> DeployTarget:
        if runtime == "docker":
            from agents.build.image import docker_client

            own = self._docker_client is None
            return LocalTarget(self._docker_client or docker_client(self.settings), self.redis,
                               self.settings.workdir, owns_client=own)
        if runtime == "kubernetes":
            from agents.deploy.targets.kubernetes import KubernetesTarget
            from agents.deploy.targets.kubernetes.api import KubeApi, connect

            cluster = self.config.environment(self.env).kubernetes
            replicas = {s.name: s.replicas for s in self.config.deployment.services}
            return KubernetesTarget(KubeApi(connect(cluster), cluster.namespace), self.redis, cluster,
                                    replicas=replicas, secret_keys=list(self.config.secrets.keys),
                                    secrets_manager=self.config.secrets.manager)
        if runtime == "ecs":
            return self._ecs()
        if runtime == "ec2":
            return self._ec2()
        if runtime == "lambda":
            return self._lambda()
        if runtime in TERRAFORM_ONLY_RUNTIMES:
            raise StageFailed(f"nothing was deployed: runtime `{runtime}` has no deploy target here (its Terraform is "
                              "generated, formatted and policy-checked by the iac stage, not applied)",
                              hint="apply the generated Terraform and deploy the image with your own pipeline, or "
                                   f"choose a runtime with a target: {', '.join(RUNTIMES)}")
        raise StageFailed(f"no deploy target for runtime `{runtime}`", hint=f"use one of {', '.join(RUNTIMES)}")

    def _ecs(self) -> DeployTarget:
        from agents.deploy.targets.ecs import EcsTarget

        # What the iac stage applied for this environment (its outputs) overrides what the settings name.
        settings = outputs.ecs_settings(self.redis, self.config.project.name, self.env,
                                        self.config.environment(self.env).ecs)
        if settings is None:
            raise StageFailed(f"{self.env} has no ECS settings for its `runtime: ecs` services",
                              hint=f"add environments.{self.env}.ecs (cluster, listener, subnets, execution_role) "
                                   "to devops_orchestra.yaml")
        return self._behind_alb(EcsTarget, settings)

    def _ec2(self) -> DeployTarget:
        from agents.deploy.targets.ec2 import Ec2Target

        # What the iac stage applied for this environment (its listener) overrides what the settings name.
        settings = outputs.ec2_settings(self.redis, self.config.project.name, self.env,
                                        self.config.environment(self.env).ec2)
        if settings is None:
            raise StageFailed(f"{self.env} has no EC2 settings for its `runtime: ec2` services",
                              hint=f"add environments.{self.env}.ec2 (listener, region) to devops_orchestra.yaml, "
                                   "or let the iac stage generate and apply the platform")
        return self._behind_alb(Ec2Target, settings)

    def _behind_alb(self, target: type[AlbColoursTarget], settings: EcsCluster | Ec2Fleet) -> DeployTarget:
        """An ECS or EC2 target: colours behind an ALB listener, judged on the rollback thresholds."""
        from agents.deploy.targets.ecs.aws import Aws

        threshold = self.config.rollback.threshold
        return target(Aws(settings.region), self.redis, settings,
                      replicas={s.name: s.replicas for s in self.config.deployment.services},
                      secret_keys=list(self.config.secrets.keys), secrets_manager=self.config.secrets.manager,
                      error_rate=threshold.error_rate, latency_ms=threshold.latency_ms)

    def _lambda(self) -> DeployTarget:
        from agents.deploy.targets.awslambda import LambdaTarget
        from agents.deploy.targets.ecs.aws import Aws

        # The aliases the last apply made stand in for settings the environment does not give.
        settings = outputs.lambda_settings(self.redis, self.config.project.name, self.env,
                                           self.config.environment(self.env).lambda_)
        if settings is None:
            raise StageFailed(f"{self.env} has no Lambda settings for its `runtime: lambda` services",
                              hint=f"add environments.{self.env}.lambda (function, alias, region) to "
                                   "devops_orchestra.yaml")
        threshold = self.config.rollback.threshold
        return LambdaTarget(Aws(settings.region), self.redis, settings, secret_keys=list(self.config.secrets.keys),
                            error_rate=threshold.error_rate, latency_ms=threshold.latency_ms)

    def opened(self) -> list[DeployTarget]:
        return list(self._open.values())

    def close(self) -> None:
        for target in self._open.values():
            target.close()
        self._open.clear()

    def __enter__(self) -> Targets:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WithSecrets:
    """A target whose deploys get ``secrets.keys`` resolved first (agents/deploy/targets/secrets.py): a
    missing key fails the deploy, naming it, before the target is asked to change anything."""

    def __init__(self, inner: DeployTarget, config: ProjectConfig, secrets_file: Path | None = None) -> None:
        self.inner = inner
        self.config = config
        self.secrets_file = secrets_file
        self.runtime = inner.runtime
        self.restartable = inner.restartable

    def deploy(self, plan: Plan, *, judge: Judge | None, report: Report) -> DeployOutcome:
        from agents.deploy.targets.secrets import resolve

        plan.secrets = resolve(self.config, plan.env, self.runtime, secrets_file=self.secrets_file)
        return self.inner.deploy(plan, judge=judge, report=report)

    def wait_healthy(self, release: Release, health: str, timeout: float | None = None) -> float:
        return self.inner.wait_healthy(release, health, timeout) if timeout is not None \
            else self.inner.wait_healthy(release, health)

    def restore(self, outcome: DeployOutcome, health: str) -> None:
        self.inner.restore(outcome, health)

    def rollback(self, service: str, env: str, *, to_version: str | None, health: str, keep_s: float,
                 run_id: str) -> tuple[LiveState, bool]:
        return self.inner.rollback(service, env, to_version=to_version, health=health, keep_s=keep_s, run_id=run_id)

    def restart(self, state: LiveState, release: Release, health: str) -> str:
        return self.inner.restart(state, release, health)

    def reap(self, now: float | None = None) -> list[str]:
        return self.inner.reap(now)

    def live(self, service: str, env: str) -> LiveState | None:
        return self.inner.live(service, env)

    def logs(self, release: Release, lines: int = 50) -> str:
        return self.inner.logs(release, lines)

    def scrape_address(self, release: Release) -> str | None:
        return self.inner.scrape_address(release)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # the wrapped target's own attributes (api, aws, stats)
        return getattr(self.inner, name)
