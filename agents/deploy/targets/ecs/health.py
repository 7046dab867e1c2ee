"""Readiness of an ECS colour (its target group's healthy targets) and why it is not serving.

The ALB's view is what matters to traffic: a colour is ready when its target group has as many
``healthy`` targets as the service wants tasks. When it never gets there, the report says what the
target group, the ECS service's events, its stopped tasks and the version's log stream say.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agents.deploy.targets.ecs.aws import Aws, AwsError
from agents.deploy.targets.ecs.resources import TargetGroup
from agents.deploy.targets.state import Release
from orchestra.errors import StageFailed

POLL_S = 0.25
EVENTS_REPORTED = 3


def healthy_targets(aws: Aws, group: TargetGroup) -> tuple[int, str]:
    """(healthy targets, what the others say) of ``group``."""
    described = aws.call("elbv2", "describe_target_health", TargetGroupArn=group.arn)["TargetHealthDescriptions"]
    healthy = 0
    others: dict[str, int] = {}
    for target in described:
        health = target.get("TargetHealth") or {}
        if health.get("State") == "healthy":
            healthy += 1
        else:
            said = f"{health.get('State')} ({health.get('Reason') or health.get('Description') or '?'})"
            others[said] = others.get(said, 0) + 1
    return healthy, ", ".join(f"{n} {s}" for s, n in others.items())


def wait_healthy(aws: Aws, cluster: str, release: Release, group: TargetGroup, want: int, timeout: float,
                 sleep: Callable[[float], None] = time.sleep, log_group: str | None = None) -> float:
    """Seconds until ``group`` has ``want`` healthy targets; StageFailed with a report when it never does."""
    started = time.monotonic()
    while True:
        healthy, others = healthy_targets(aws, group)
        if healthy >= want:
            return round(time.monotonic() - started, 2)
        waited = time.monotonic() - started
        if waited >= timeout:
            said = f"{healthy}/{want} targets healthy in target group {group.name}" + (f"; {others}" if others else "")
            raise StageFailed(f"{release.container} ({release.version}) was not healthy within {timeout:.0f}s: "
                              f"{said}\n{report(aws, cluster, release, log_group)}",
                              hint="the service's events and logs are above; check the image, its health path, "
                                   "that it listens on $PORT, and the target group's health check")
        sleep(min(POLL_S, max(timeout - waited, 0.01)))


def report(aws: Aws, cluster: str, release: Release, log_group: str | None, lines: int = 20) -> str:
    """The ECS service's last events, its stopped tasks' reasons and the tail of the version's logs."""
    parts = []
    try:
        found = aws.call("ecs", "describe_services", cluster=cluster, services=[release.container])["services"]
        for event in (found[0].get("events") or [])[:EVENTS_REPORTED] if found else []:
            parts.append(f"event: {event.get('message')}")
        stopped = aws.call("ecs", "list_tasks", cluster=cluster, serviceName=release.container,
                           desiredStatus="STOPPED")["taskArns"]
        if stopped:
            for task in aws.call("ecs", "describe_tasks", cluster=cluster, tasks=stopped[:3])["tasks"]:
                parts.append(f"task stopped: {task.get('stoppedReason') or task.get('lastStatus')}")
    except AwsError as exc:
        parts.append(f"(no service events: {exc.message})")
    parts.append(logs(aws, log_group, release, lines) if log_group else "(no log group)")
    return "\n".join(parts) or "(ECS reported nothing)"


def logs(aws: Aws, group: str, release: Release, lines: int, prefix: str | None = None) -> str:
    """The last ``lines`` of the version's awslogs streams (``prefix``, default the version)."""
    try:
        found: dict[str, Any] = aws.call("logs", "filter_log_events", logGroupName=group,
                                         logStreamNamePrefix=prefix or release.version, limit=1000)
    except AwsError as exc:
        return f"(no logs in {group}: {exc.message})"
    messages = [str(e.get("message", "")).rstrip() for e in found.get("events") or []]
    return "\n".join(messages[-lines:]) if messages else f"(no log lines in {group} for {release.version})"
