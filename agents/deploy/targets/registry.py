"""Which target serves a service: its ``runtime`` (``docker``: this host; ``kubernetes``: a cluster;
``ecs``: an ECS cluster behind an ALB; ``lambda``: a function's versions behind an alias).

:class:`Targets` opens each target the first time a service needs it (no Docker engine is touched for
a group that runs only on Kubernetes) and closes what it opened.
"""
from __future__ import annotations

from typing import Any

import docker
from redis import Redis

from agents.deploy.targets.base import DeployTarget
from agents.deploy.targets.local import LocalTarget
from orchestra.config import ProjectConfig
from orchestra.errors import StageFailed
from orchestra.settings import Settings

RUNTIMES = ("docker", "kubernetes", "ecs", "lambda")


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
            self._open[runtime] = self._make(runtime)
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
                                    replicas=replicas)
        if runtime == "ecs":
            return self._ecs()
        if runtime == "lambda":
            return self._lambda()
        raise StageFailed(f"no deploy target for runtime `{runtime}`", hint=f"use one of {', '.join(RUNTIMES)}")

    def _ecs(self) -> DeployTarget:
        from agents.deploy.targets.ecs import EcsTarget
        from agents.deploy.targets.ecs.aws import Aws

        settings = self.config.environment(self.env).ecs
        if settings is None:
            raise StageFailed(f"{self.env} has no ECS settings for its `runtime: ecs` services",
                              hint=f"add environments.{self.env}.ecs (cluster, listener, subnets, execution_role) "
                                   "to devops_orchestra.yaml")
        threshold = self.config.rollback.threshold
        return EcsTarget(Aws(settings.region), self.redis, settings,
                         replicas={s.name: s.replicas for s in self.config.deployment.services},
                         secret_keys=list(self.config.secrets.keys), secrets_manager=self.config.secrets.manager,
                         error_rate=threshold.error_rate, latency_ms=threshold.latency_ms)

    def _lambda(self) -> DeployTarget:
        from agents.deploy.targets.awslambda import LambdaTarget
        from agents.deploy.targets.ecs.aws import Aws

        settings = self.config.environment(self.env).lambda_
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
