"""The ECS target (``runtime: ecs``): one ECS service per colour behind an ALB listener's weights.

A deploy registers a task definition revision for the version, points the idle colour's ECS service
at it (created on first use, bound to the colour's target group), waits until the colour's target
group has ``replicas`` healthy targets, then moves the listener's weights with the plan's strategy
(:class:`agents.deploy.targets.alb.AlbColoursTarget`, shared with the EC2 target). Secrets reach the
task as Secrets Manager ARNs; a missing one stops the deploy before anything changes. A restart (the
always-on watch's) forces a new deployment of the colour's ECS service that holds the release (fresh
tasks of the same task definition), then waits for its healthy targets.
"""
from __future__ import annotations

from typing import Any

from agents.deploy.targets.alb import AlbColoursTarget
from agents.deploy.targets.base import Plan
from agents.deploy.targets.ecs import health
from agents.deploy.targets.ecs import resources as r
from agents.deploy.targets.state import LiveState, Release
from orchestra.config.types import EcsCluster
from orchestra.errors import NotFound


class EcsTarget(AlbColoursTarget):
    """Deploy, undo and roll back services on one ECS cluster behind one ALB listener."""

    runtime = "ecs"
    restartable = True
    kind = "ECS service"
    secrets_how = "ECS tasks get their secrets from Secrets Manager by ARN"
    settings: EcsCluster

    def restart(self, state: LiveState, release: Release, health: str) -> str:
        """A new deployment of the colour's ECS service holding ``release``, then its healthy targets."""
        running = self._image(release.container)
        if running is None:
            raise NotFound(f"the ECS service {release.container} was not found in cluster {self.settings.cluster}",
                           hint=f"deploy {state.service} again, or `/rollback {state.service} {state.env}`")
        if running != release.image:
            raise NotFound(f"{state.service} {release.version} was not found in the ECS service {release.container} "
                           f"(it runs {running})", hint=f"deploy {state.service} again")
        self.aws.call("ecs", "update_service", cluster=self.settings.cluster, service=release.container,
                      forceNewDeployment=True)
        took = self.wait_healthy(release, health)
        return f"new deployment of the ECS service {release.container} (forceNewDeployment); " \
               f"healthy again in {took:.1f}s"

    # -- the platform's hooks -----------------------------------------------------------------------

    def _prepare(self, plan: Plan, name: str, secrets: dict[str, str]) -> dict[str, Any]:
        return r.task_definition(plan, self.settings, self.aws.region, secrets)

    def _start(self, plan: Plan, name: str, group: r.TargetGroup, prepared: dict[str, Any]) -> dict[str, object]:
        arn = self.aws.call("ecs", "register_task_definition", **prepared)["taskDefinition"]["taskDefinitionArn"]
        self._run(plan.service, name, arn, group, plan.replicas, plan.port_hint or 5000)
        return {"task_definition": arn}

    def _wait(self, release: Release, group: r.TargetGroup, want: int, timeout: float, log_group: str) -> float:
        return health.wait_healthy(self.aws, self.settings.cluster, release, group, want, timeout, self.sleep,
                                   log_group)

    def _run(self, service: str, name: str, task_def: str, group: r.TargetGroup, replicas: int, port: int) -> None:
        """Point the colour's ECS service at ``task_def`` with ``replicas`` tasks (created if missing)."""
        found = self.aws.call("ecs", "describe_services", cluster=self.settings.cluster, services=[name])
        if any(s.get("status") == "ACTIVE" for s in found.get("services") or []):
            self.aws.call("ecs", "update_service", cluster=self.settings.cluster, service=name,
                          taskDefinition=task_def, desiredCount=replicas, forceNewDeployment=True)
            return
        self.aws.call("ecs", "create_service", cluster=self.settings.cluster, serviceName=name,
                      taskDefinition=task_def, desiredCount=replicas, launchType=self.settings.launch_type,
                      loadBalancers=[{"targetGroupArn": group.arn, "containerName": service, "containerPort": port}],
                      healthCheckGracePeriodSeconds=30, **r.network(self.settings))

    def _image(self, name: str) -> str | None:
        found = self._service(name)
        if found is None:
            return None
        task = self.aws.call("ecs", "describe_task_definition", taskDefinition=found["taskDefinition"])
        return str(task["taskDefinition"]["containerDefinitions"][0]["image"])

    def _service(self, name: str) -> dict[str, Any] | None:
        found = self.aws.call("ecs", "describe_services", cluster=self.settings.cluster, services=[name])
        return next((s for s in found.get("services") or [] if s.get("status") == "ACTIVE"), None)

    def _desired(self, name: str) -> int:
        return int((self._service(name) or {}).get("desiredCount") or 0)

    def _scale(self, name: str, count: int) -> None:
        self.aws.call("ecs", "update_service", cluster=self.settings.cluster, service=name, desiredCount=count)

    def _location(self) -> str:
        return f"{self.settings.cluster} ({self.aws.region})"
