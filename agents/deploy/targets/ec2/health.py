"""Readiness of an EC2 colour and why it is not serving.

A colour is ready when its target group has ``want`` healthy targets that are InService instances of the
colour's Auto Scaling group launched from the launch template the group now uses. The intersection
matters: a terminated instance can stay ``healthy`` in a target group for a while (moto_server keeps it
so for good), and an instance of the previous template is not the release. When it never gets there,
the report says what the group's scaling activities, the target group and the version's logs say.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from agents.deploy.targets.ec2 import templates
from agents.deploy.targets.ecs.aws import Aws, AwsError
from agents.deploy.targets.ecs.health import logs
from agents.deploy.targets.ecs.resources import TargetGroup, stream_prefix
from agents.deploy.targets.state import Release
from orchestra.errors import StageFailed

POLL_S = 0.25
ACTIVITIES_REPORTED = 3


def serving(aws: Aws, name: str, group: TargetGroup) -> tuple[list[str], str]:
    """(the release's healthy instances, what the group's other targets say) of the Auto Scaling group ``name``."""
    found = templates.group(aws, name) or {}
    template = (found.get("LaunchTemplate") or {}).get("LaunchTemplateId")
    members = [i["InstanceId"] for i in found.get("Instances") or [] if i.get("LifecycleState") == "InService"]
    ours = {i for i, lt in templates.launched_from(aws, members).items() if template and lt == template}
    described = aws.call("elbv2", "describe_target_health", TargetGroupArn=group.arn)["TargetHealthDescriptions"]
    healthy: list[str] = []
    others: dict[str, int] = {}
    for target in described:
        instance, health = target["Target"]["Id"], target.get("TargetHealth") or {}
        if health.get("State") == "healthy" and instance in ours:
            healthy.append(instance)
        elif instance in members:
            said = f"{health.get('State')} ({health.get('Reason') or health.get('Description') or '?'})"
            others[said] = others.get(said, 0) + 1
    return sorted(healthy), ", ".join(f"{n} {s}" for s, n in others.items())


def wait_healthy(aws: Aws, release: Release, group: TargetGroup, want: int, timeout: float,
                 sleep: Callable[[float], None] = time.sleep, log_group: str | None = None) -> float:
    """Seconds until the colour's release has ``want`` healthy targets; StageFailed with a report otherwise."""
    started = time.monotonic()
    while True:
        sleep(POLL_S)  # a look right after the group changed could only see instances that are not booted yet
        healthy, others = serving(aws, release.container, group)
        if len(healthy) >= want:
            return round(time.monotonic() - started, 2)
        waited = time.monotonic() - started
        if waited >= timeout:
            said = f"{len(healthy)}/{want} instances of the release healthy in target group {group.name}" + \
                (f"; the group's other targets: {others}" if others else "")
            raise StageFailed(f"{release.container} ({release.version}) was not healthy within {timeout:.0f}s: "
                              f"{said}\n{report(aws, release, log_group)}",
                              hint="the scaling activities and logs are above; check the image, its health path, "
                                   "that it listens on $PORT, the instance role (ECR, Secrets Manager, Logs) and "
                                   "the target group's health check")


def report(aws: Aws, release: Release, log_group: str | None, lines: int = 20) -> str:
    """The Auto Scaling group's recent scaling activities and the tail of the version's logs."""
    parts = []
    try:
        found = aws.call("autoscaling", "describe_scaling_activities", AutoScalingGroupName=release.container,
                         MaxRecords=ACTIVITIES_REPORTED)["Activities"]
        for activity in found:
            parts.append(f"activity: {activity.get('StatusCode')}: {activity.get('Description')}"
                         + (f" ({activity['StatusMessage']})" if activity.get("StatusMessage") else ""))
        if not found:
            parts.append(f"(no scaling activities of {release.container})")
    except AwsError as exc:
        parts.append(f"(no scaling activities: {exc.message})")
    parts.append(logs(aws, log_group, release, lines, prefix=stream_prefix(release.version)) if log_group
                 else "(no log group)")
    return "\n".join(parts)
