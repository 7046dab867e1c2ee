"""The EC2 target (``runtime: ec2``): one Auto Scaling group per colour behind an ALB listener's weights.

A deploy makes a launch template for the release (the base template's fields, user data that runs the
image: :mod:`agents.deploy.targets.ec2.userdata`), points the idle colour's Auto Scaling group at it with
``replicas`` instances, replaces the instances the group still has from another template, waits until its
target group has ``replicas`` healthy targets of the release's instances, then moves the listener's weights
with the plan's strategy (:class:`agents.deploy.targets.alb.AlbColoursTarget`, shared with ECS). Secrets
stay in Secrets Manager: the deploy checks each exists, the instances read them at boot with their role.
A restart (the always-on watch's) replaces the colour's instances one at a time, each time waiting until
the release has all its healthy targets again.
"""
from __future__ import annotations

from typing import Any

from agents.deploy.targets.alb import AlbColoursTarget
from agents.deploy.targets.base import Plan
from agents.deploy.targets.ec2 import health, templates, userdata
from agents.deploy.targets.ecs import resources as r
from agents.deploy.targets.state import LiveState, Release
from orchestra.config.types import Ec2Fleet
from orchestra.errors import NotFound, StageFailed


class Ec2Target(AlbColoursTarget):
    """Deploy, undo and roll back services on Auto Scaling groups behind one ALB listener."""

    runtime = "ec2"
    restartable = True
    kind = "Auto Scaling group"
    secrets_how = "EC2 instances read their secrets from Secrets Manager with their instance role"
    settings: Ec2Fleet

    def restart(self, state: LiveState, release: Release, health_path: str) -> str:
        """Replace the colour's instances one at a time, each time until the release is all healthy again."""
        found = templates.group(self.aws, release.container)
        if found is None:
            raise NotFound(f"the Auto Scaling group {release.container} was not found in {self.aws.region}",
                           hint=f"deploy {state.service} again, or `/rollback {state.service} {state.env}`")
        running = self._image(release.container)
        if running != release.image:
            raise NotFound(f"{state.service} {release.version} was not found in the Auto Scaling group "
                           f"{release.container} (it runs {running or 'nothing'})",
                           hint=f"deploy {state.service} again")
        instances = [i["InstanceId"] for i in found.get("Instances") or [] if i.get("LifecycleState") == "InService"]
        took = 0.0
        for instance in instances:
            self.aws.call("autoscaling", "terminate_instance_in_auto_scaling_group", InstanceId=instance,
                          ShouldDecrementDesiredCapacity=False)
            took += self.wait_healthy(release, health_path)
        return f"replaced the {len(instances)} instances of the Auto Scaling group {release.container} one at a " \
               f"time; healthy again in {took:.1f}s"

    # -- the platform's hooks -----------------------------------------------------------------------

    def _prepare(self, plan: Plan, name: str, secrets: dict[str, str]) -> templates.ReleaseTemplate:
        if templates.group(self.aws, name) is None:
            raise StageFailed(f"the Auto Scaling group {name} does not exist in {self.aws.region}",
                              hint="the platform (its Terraform) makes <service>-<env>-blue and -green, each in its "
                                   "colour's target group; nothing was deployed")
        base = templates.base_data(self.aws, plan.service, plan.env)
        prefix = self.settings.secret_prefix.replace("{env}", plan.env)
        script = userdata.script(plan, region=self.aws.region, log_group=r.log_group(self.settings, plan.service,
                                                                                      plan.env),
                                 secrets={key: prefix + key for key in secrets})
        tags = {"orchestra.service": plan.service, "orchestra.env": plan.env, "orchestra.version": plan.version,
                "orchestra.image": plan.image, "orchestra.run": plan.run_id}
        return templates.for_release(base, templates.release_name(plan.service, plan.env, plan.version), script, tags)

    def _start(self, plan: Plan, name: str, group: r.TargetGroup,
               prepared: templates.ReleaseTemplate) -> dict[str, object]:
        service_env = templates.base_name(plan.service, plan.env)
        other = f"{service_env}-{r.COLOURS[1 - r.colour_of_name(name)]}"
        made = templates.create(self.aws, prepared, self._templates_used(other))
        found = templates.group(self.aws, name) or {}
        self.aws.call("autoscaling", "update_auto_scaling_group", AutoScalingGroupName=name,
                      LaunchTemplate={"LaunchTemplateName": made["LaunchTemplateName"], "Version": "$Default"},
                      MinSize=0, MaxSize=max(int(found.get("MaxSize") or 0), plan.replicas),
                      DesiredCapacity=plan.replicas)
        members = [i["InstanceId"] for i in found.get("Instances") or []
                   if i.get("LifecycleState") not in ("Terminating", "Terminated")]
        stale = [i for i, lt in templates.launched_from(self.aws, members).items() if lt != made["LaunchTemplateId"]]
        for instance in stale:  # the group replaces each with one of the release's template
            self.aws.call("autoscaling", "terminate_instance_in_auto_scaling_group", InstanceId=instance,
                          ShouldDecrementDesiredCapacity=False)
        self._sweep(plan.service, plan.env)
        return {"launch_template": made["LaunchTemplateName"], "replaced": len(stale)}

    def _wait(self, release: Release, group: r.TargetGroup, want: int, timeout: float, log_group: str) -> float:
        return health.wait_healthy(self.aws, release, group, want, timeout, self.sleep, log_group)

    def _retire(self, release: Release, state: LiveState) -> None:
        super()._retire(release, state)
        self._sweep(state.service, state.env)

    def _wind_down(self, release: Release) -> None:
        super()._wind_down(release)
        self._sweep(*self._owner(release))

    def _sweep(self, service: str, env: str) -> None:
        """Delete the release templates neither colour's group uses any more (the base template stays)."""
        used: set[str] = set()
        for colour in r.COLOURS:
            used |= self._templates_used(f"{templates.base_name(service, env)}-{colour}")
        templates.sweep(self.aws, service, env, used)

    def _templates_used(self, name: str) -> set[str]:
        found = templates.group(self.aws, name) or {}
        template = (found.get("LaunchTemplate") or {}).get("LaunchTemplateName")
        return {str(template)} if template else set()

    def _image(self, name: str) -> str | None:
        found = templates.group(self.aws, name)
        template = ((found or {}).get("LaunchTemplate") or {}).get("LaunchTemplateName")
        return templates.image_of(self.aws, str(template)) if template else None

    def _desired(self, name: str) -> int:
        return int((templates.group(self.aws, name) or {}).get("DesiredCapacity") or 0)

    def _scale(self, name: str, count: int) -> None:
        found: dict[str, Any] = templates.group(self.aws, name) or {}
        self.aws.call("autoscaling", "update_auto_scaling_group", AutoScalingGroupName=name, MinSize=0,
                      MaxSize=max(int(found.get("MaxSize") or 0), count), DesiredCapacity=count)

    def _location(self) -> str:
        """The ALB's name and the region (from the listener's ARN: ...:listener/app/<name>/<id>/<id>)."""
        parts = self.settings.listener.split(":", 5)[-1].split("/")
        return f"{parts[2] if len(parts) > 2 else self.settings.listener} ({self.aws.region})"
