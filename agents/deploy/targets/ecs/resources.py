"""What the ECS target sends and moves: task definitions, the two colours' target groups, the listener.

* One task definition revision per version, family ``<service>-<env>``: the image, cpu/memory, the
  port, a container health check on the service's health path, the ``awslogs`` driver (stream prefix =
  the version) and each of ``secrets.keys`` as a Secrets Manager ARN (ECS injects the value; the task
  definition holds only the ARN).
* Two ECS services per service and environment, ``<service>-<env>-blue`` and ``-green``, each behind
  its own target group (named in the environment's ``ecs.target_groups``).
* :class:`Listener` finds the ALB listener's action (its default action or a rule) that forwards to
  those target groups and rewrites only its weights; anything else on the listener is left alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from agents.deploy.targets.base import Plan
from agents.deploy.targets.ecs.aws import Aws, AwsError
from agents.deploy.targets.state import Release
from orchestra.config.types import Ec2Fleet, EcsCluster
from orchestra.errors import StageFailed

COLOURS = ("blue", "green")
# What each runtime's target groups hold: ECS tasks in awsvpc are ip targets, an Auto Scaling group's instances
TARGETS = {"ecs": "ip targets; the deploy registers ECS services into them",
           "ec2": "instance targets, each in its colour's Auto Scaling group's target_group_arns"}


def service_name(service: str, env: str, colour: str) -> str:
    """``web-staging-blue``: the ECS service of one colour."""
    return f"{service}-{env}-{colour}"


def colour_of(release: Release) -> int:
    """0 for blue, 1 for green (from the name of the colour the release runs in: an ECS service, an ASG)."""
    return colour_of_name(release.container)


def colour_of_name(name: str) -> int:
    return COLOURS.index(name.rsplit("-", 1)[-1])


def family(service: str, env: str) -> str:
    return f"{service}-{env}"


def task_definition(plan: Plan, settings: EcsCluster, region: str,
                    secrets: dict[str, str]) -> dict[str, Any]:
    """register_task_definition's parameters for ``plan.version``; ``secrets`` is KEY -> secret ARN."""
    port = plan.port_hint or 5000
    env = container_env(plan, secrets)
    check = f"curl -fsS http://localhost:{port}{plan.health} || wget -qO- http://localhost:{port}{plan.health}"
    container = {
        "name": plan.service, "image": plan.image, "essential": True,
        "portMappings": [{"containerPort": port, "protocol": "tcp"}],
        "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "secrets": [{"name": k, "valueFrom": arn} for k, arn in sorted(secrets.items())],
        "healthCheck": {"command": ["CMD-SHELL", f"{check} || exit 1"], "interval": 10, "timeout": 5,
                        "retries": 3, "startPeriod": 15},
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": log_group(settings, plan.service, plan.env), "awslogs-region": region,
            "awslogs-stream-prefix": stream_prefix(plan.version), "awslogs-create-group": "true"}},
    }
    params: dict[str, Any] = {
        "family": family(plan.service, plan.env), "containerDefinitions": [container],
        "requiresCompatibilities": [settings.launch_type], "cpu": str(settings.cpu),
        "memory": str(settings.memory),
        "tags": [{"key": "orchestra.service", "value": plan.service}, {"key": "orchestra.env", "value": plan.env},
                 {"key": "orchestra.version", "value": plan.version}, {"key": "orchestra.run", "value": plan.run_id}],
    }
    if settings.launch_type == "FARGATE" or settings.subnets:
        params["networkMode"] = "awsvpc"
    if settings.execution_role:
        params["executionRoleArn"] = settings.execution_role
    return params


def container_env(plan: Plan, secrets: dict[str, str] | list[str]) -> dict[str, str]:
    """The container's plain variables (ECS tasks and EC2 instances alike); a name that is also a secret is
    refused."""
    env = {**plan.extra_env, "PORT": str(plan.port_hint or 5000), "HOST": "0.0.0.0",  # nosec B104: in the container
           "APP_VERSION": plan.version, "ORCHESTRA_ENV": plan.env}
    clash = sorted(set(env) & set(secrets))
    if clash:
        raise StageFailed(f"{', '.join(clash)} is both a secret and a plain variable of {plan.service}",
                          hint="remove it from services[].env: secrets.keys delivers it")
    return env


def log_group(settings: EcsCluster | Ec2Fleet, service: str, env: str) -> str:
    return settings.log_group.replace("{service}", service).replace("{env}", env)


def stream_prefix(version: str) -> str:
    """The version as a log stream name part (no ``:`` or ``*``, at most 100 characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", version)[:100] or "release"


def network(settings: EcsCluster) -> dict[str, Any]:
    if not settings.subnets:
        return {}
    return {"networkConfiguration": {"awsvpcConfiguration": {
        "subnets": settings.subnets, "securityGroups": settings.security_groups,
        "assignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED"}}}


@dataclass(frozen=True)
class TargetGroup:
    name: str
    arn: str
    load_balancer: str | None  # the ALB's ARN

    @property
    def dimension(self) -> str:
        """``targetgroup/web-blue/0123456789abcdef``: the TargetGroup dimension of its CloudWatch metrics."""
        return self.arn.split(":", 5)[5]

    @property
    def lb_dimension(self) -> str | None:
        return self.load_balancer.split(":", 5)[5].removeprefix("loadbalancer/") if self.load_balancer else None


def target_groups(aws: Aws, settings: EcsCluster | Ec2Fleet, service: str, env: str, *,
                  section: str = "ecs") -> tuple[TargetGroup, TargetGroup]:
    """The blue and green target groups of ``service``; a clear error when the platform has not made them
    (``section``: the environment's settings that name them, ``ecs`` or ``ec2``)."""
    names = [n.replace("{service}", service).replace("{env}", env) for n in settings.target_groups]
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            groups = aws.call("elbv2", "describe_target_groups", Names=[name])["TargetGroups"]
        except AwsError as exc:
            if exc.code != "TargetGroupNotFound":
                raise
            raise StageFailed(f"the target group {name} does not exist in {aws.region}",
                              hint=f"create both target groups of the service ({TARGETS[section]}) behind the "
                                   f"listener, named as environments.<env>.{section}.target_groups says") from exc
        found[name] = groups[0]
    blue, green = (TargetGroup(n, found[n]["TargetGroupArn"], (found[n].get("LoadBalancerArns") or [None])[0])
                   for n in names)
    return blue, green


class Listener:
    """The forward action of an ALB listener that names a service's two target groups."""

    def __init__(self, aws: Aws, arn: str, groups: tuple[TargetGroup, TargetGroup], *, section: str = "ecs") -> None:
        self.aws = aws
        self.arn = arn
        self.section = section
        self.load_balancer = ""
        self.rule, self.default = self._locate(groups)
        # the ALB's metrics carry its LoadBalancer dimension, even for a target group it does not route to yet
        self.groups = (replace(groups[0], load_balancer=self.load_balancer),
                       replace(groups[1], load_balancer=self.load_balancer))

    def _locate(self, groups: tuple[TargetGroup, TargetGroup]) -> tuple[str, bool]:
        ours = {g.arn for g in groups}
        try:
            found = self.aws.call("elbv2", "describe_listeners", ListenerArns=[self.arn])["Listeners"]
            self.load_balancer = str(found[0]["LoadBalancerArn"])
            rules = self.aws.call("elbv2", "describe_rules", ListenerArn=self.arn)["Rules"]
        except AwsError as exc:
            if exc.code != "ListenerNotFound":
                raise
            raise StageFailed(f"the listener {self.arn} does not exist",
                              hint=f"set environments.<env>.{self.section}.listener to the ALB listener's ARN") from exc
        for rule in rules:
            for action in rule.get("Actions") or []:
                if action.get("Type") == "forward" and ours & _forwarded(action):
                    return str(rule["RuleArn"]), bool(rule.get("IsDefault"))
        names = " or ".join(g.name for g in groups)
        raise StageFailed(f"the listener {self.arn} forwards to neither {names}",
                          hint="point its default action or a rule at one of the two target groups; the "
                               "deploy only moves the weights between them")

    def weights(self) -> dict[str, int]:
        """Target group ARN -> weight, as the listener has them now."""
        for rule in self.aws.call("elbv2", "describe_rules", RuleArns=[self.rule])["Rules"]:
            for action in rule.get("Actions") or []:
                if action.get("Type") == "forward":
                    config = action.get("ForwardConfig") or {}
                    if config.get("TargetGroups"):
                        return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in config["TargetGroups"]}
                    return {action["TargetGroupArn"]: 1}
        return {}

    def apply(self, weights: tuple[int, int]) -> None:
        """(blue, green) weights on the forward action; nothing else of the listener changes."""
        action = {"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": g.arn, "Weight": w} for g, w in zip(self.groups, weights, strict=True)]}}
        if self.default:
            self.aws.call("elbv2", "modify_listener", ListenerArn=self.arn, DefaultActions=[action])
        else:
            self.aws.call("elbv2", "modify_rule", RuleArn=self.rule, Actions=[action])


def _forwarded(action: dict[str, Any]) -> set[str]:
    config = action.get("ForwardConfig") or {}
    arns = {g["TargetGroupArn"] for g in config.get("TargetGroups") or []}
    return arns | ({action["TargetGroupArn"]} if action.get("TargetGroupArn") else set())


@dataclass
class ListenerSplit:
    """Blue-green and canary on ECS: the listener's weights between the two colours' target groups."""

    listener: Listener

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        weights = [0, 0]
        weights[colour_of(new)] = weight
        if old is not None:
            weights[colour_of(old)] = 100 - weight
        self.listener.apply((weights[0], weights[1]))
        return {new.version: weight, **({old.version: 100 - weight} if old else {})}
