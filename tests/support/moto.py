"""A real ``moto_server`` on loopback, the AWS platform a team would have built, and what AWS itself does.

:func:`moto_server` starts the server on a free port and stops it. :func:`platform` creates what
Terraform would (a VPC and subnet, an ALB, two ip target groups per service, a listener forwarding
to the blue one, an ECS cluster) through boto3, as the platform team would. moto stores ECS services
and listener weights but runs no tasks and routes no traffic, so :class:`Ecs` plays the ECS agent
(registers a healthy target in a colour's target group for each task its service wants, none for an
image in ``crashing``) and :class:`Alb` plays the load balancer (puts RequestCount and 5xx data into
CloudWatch for each target group in proportion to the listener's weights, with the error rate of the
image serving it). Both act only through the AWS API, with their own client.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import requests

from tests.support.services import free_port, port_open, wait_for

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@contextmanager
def moto_server(*, env: dict[str, str] | None = None) -> Iterator[str]:
    """A moto_server on 127.0.0.1 (its own process); yields its URL."""
    binary = shutil.which("moto_server") or os.path.join(os.path.dirname(os.sys.executable), "moto_server")
    port = free_port()
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        wait_for(lambda: port_open(port), timeout=20, what=f"moto_server on port {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def reset(url: str) -> None:
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()


def session(url: str, **credentials: str) -> boto3.session.Session:
    """A boto3 session whose clients talk to ``url`` (the test's own, not the product's)."""
    creds = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.session.Session(region_name=REGION, **creds)


def client(url: str, name: str, **credentials: str) -> Any:
    return session(url, **credentials).client(name, endpoint_url=url)  # type: ignore[call-overload]


@dataclass
class Platform:
    """What the platform team built: the ARNs and ids the environment's ``ecs`` settings name."""

    url: str
    cluster: str
    listener: str
    load_balancer: str
    subnet: str
    security_group: str
    groups: dict[str, str] = field(default_factory=dict)  # target group name -> ARN
    execution_role: str = "arn:aws:iam::123456789012:role/ecsTaskExecutionRole"


def platform(url: str, services: tuple[str, ...] = ("web",), **credentials: str) -> Platform:
    """A VPC, an ALB with one listener (a rule per service after the first), target groups, a cluster."""
    ec2, elb, ecs = (client(url, n, **credentials) for n in ("ec2", "elbv2", "ecs"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")
               ["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    sg = ec2.create_security_group(GroupName="shop", Description="shop", VpcId=vpc)["GroupId"]
    lb = elb.create_load_balancer(Name="shop", Subnets=subnets, SecurityGroups=[sg])["LoadBalancers"][0]
    groups = {}
    for service in services:
        for colour in ("blue", "green"):
            name = f"{service}-{colour}"
            groups[name] = elb.create_target_group(Name=name, Protocol="HTTP", Port=8080, VpcId=vpc,
                                                   TargetType="ip", HealthCheckPath="/health"
                                                   )["TargetGroups"][0]["TargetGroupArn"]
    first = services[0]
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "forward", "TargetGroupArn": groups[f"{first}-blue"]}])["Listeners"][0]["ListenerArn"]
    for priority, service in enumerate(services[1:], start=1):
        elb.create_rule(ListenerArn=listener, Priority=priority, Conditions=[
            {"Field": "path-pattern", "Values": [f"/{service}/*"]}], Actions=[
            {"Type": "forward", "TargetGroupArn": groups[f"{service}-blue"]}])
    ecs.create_cluster(clusterName="shop")
    return Platform(url, "shop", listener, lb["LoadBalancerArn"], subnets[0], sg, groups)


class Ecs:
    """The ECS agent and the ALB's health checks: each task a service wants becomes a healthy ip target
    of its target group, unless its image is in ``crashing`` (its tasks never pass a health check)."""

    def __init__(self, url: str, cluster: str, *, crashing: set[str] | None = None, interval_s: float = 0.05,
                 credentials: dict[str, str] | None = None) -> None:
        self.ecs, self.elb = client(url, "ecs", **(credentials or {})), client(url, "elbv2", **(credentials or {}))
        self.cluster = cluster
        self.crashing = crashing if crashing is not None else set()
        self.slow: dict[str, float] = {}  # image -> seconds before its tasks pass health checks
        self.healthy_at: dict[str, float] = {}  # "<service>:<image>" -> just before it first got all its targets
        self.interval_s = interval_s
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecs-agent", daemon=True)

    def start(self) -> Ecs:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a service deleted between calls: the next round sees it
                pass
            self._stop.wait(self.interval_s)

    def reconcile(self) -> None:
        arns = self.ecs.list_services(cluster=self.cluster)["serviceArns"]
        if not arns:
            return
        for service in self.ecs.describe_services(cluster=self.cluster, services=arns)["services"]:
            if service["status"] != "ACTIVE" or not service.get("loadBalancers"):
                continue
            group = service["loadBalancers"][0]["targetGroupArn"]
            image = self.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])[
                "taskDefinition"]["containerDefinitions"][0]["image"]
            key = f"{service['serviceName']}:{image}"
            self._seen.setdefault(key, time.monotonic())
            want = 0 if image in self.crashing or \
                time.monotonic() - self._seen[key] < self.slow.get(image, 0.0) else service["desiredCount"]
            if want and want == service["desiredCount"]:  # stamped before the targets exist, never after
                self.healthy_at.setdefault(key, time.monotonic())
            self._targets(group, service["serviceName"], image, want)

    def _targets(self, group: str, name: str, image: str, want: int) -> None:
        """The target group holds ``want`` targets of the service's current image (old tasks drained)."""
        tag = abs(hash((name, image))) % 200
        wanted = {f"10.0.{tag}.{i + 1}" for i in range(want)}
        have = {t["Target"]["Id"] for t in self.elb.describe_target_health(TargetGroupArn=group)
                ["TargetHealthDescriptions"] if t["TargetHealth"]["State"] == "healthy"}
        if have - wanted:
            self.elb.deregister_targets(TargetGroupArn=group, Targets=[{"Id": i} for i in have - wanted])
        if wanted - have:
            self.elb.register_targets(TargetGroupArn=group, Targets=[{"Id": i, "Port": 8080} for i in wanted - have])


class Alb:
    """The load balancer's CloudWatch metrics: ``requests`` per tick split by the listener's weights, the
    5xx share of each target group given by the image its ECS service runs (``error_rate``)."""

    def __init__(self, url: str, platform: Platform, *, requests_per_tick: int = 100) -> None:
        self.platform = platform
        self.elb, self.cw, self.ecs = client(url, "elbv2"), client(url, "cloudwatch"), client(url, "ecs")
        self.requests_per_tick = requests_per_tick
        self.error_rate: dict[str, float] = {}  # image -> share of 5xx
        self.weights_seen: list[dict[str, int]] = []  # target group name -> weight, each time they changed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval_s: float = 0.1) -> Alb:
        """Tick every ``interval_s`` in a thread (each tick stands for a minute of traffic)."""
        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - a listener being modified: the next tick reads it
                    pass
                self._stop.wait(interval_s)
        self._thread = threading.Thread(target=run, name="alb", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def tick(self) -> None:
        """One minute of traffic, as the ALB would report it."""
        names = {arn: name for name, arn in self.platform.groups.items()}
        rules = self.elb.describe_rules(ListenerArn=self.platform.listener)["Rules"]
        default = next(r for r in rules if r.get("IsDefault"))
        action = default["Actions"][0]
        config = (action.get("ForwardConfig") or {}).get("TargetGroups") or \
            [{"TargetGroupArn": action["TargetGroupArn"], "Weight": 1}]
        weights = {names[g["TargetGroupArn"]]: int(g.get("Weight", 1)) for g in config}
        if not self.weights_seen or self.weights_seen[-1] != weights:
            self.weights_seen.append(weights)
        total = sum(weights.values()) or 1
        images = self._images()
        lb = self.platform.load_balancer.split(":", 5)[5].removeprefix("loadbalancer/")
        for name, weight in weights.items():
            served = self.requests_per_tick * weight / total
            if not served:
                continue
            errors = served * self.error_rate.get(images.get(self.platform.groups[name], ""), 0.0)
            dims = [{"Name": "TargetGroup", "Value": self.platform.groups[name].split(":", 5)[5]},
                    {"Name": "LoadBalancer", "Value": lb}]
            now = datetime.now(UTC)
            self.cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
                {"MetricName": "RequestCount", "Dimensions": dims, "Value": served, "Timestamp": now},
                {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": dims, "Value": errors, "Timestamp": now},
                {"MetricName": "TargetResponseTime", "Dimensions": dims, "Value": 0.05, "Timestamp": now}])

    def _images(self) -> dict[str, str]:
        arns = self.ecs.list_services(cluster=self.platform.cluster)["serviceArns"]
        out = {}
        found = self.ecs.describe_services(cluster=self.platform.cluster, services=arns)["services"] if arns else []
        for service in found:
            if service.get("loadBalancers") and service["desiredCount"] > 0:
                task = self.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
                out[service["loadBalancers"][0]["targetGroupArn"]] = task["containerDefinitions"][0]["image"]
        return out


@contextmanager
def aws_env(url: str, **extra: str) -> Iterator[None]:
    """The product's environment for AWS: the endpoint, a region and credentials (restored afterwards)."""
    wanted = {"AWS_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": REGION, **CREDENTIALS, **extra}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Invocations:
    """Lambda's own CloudWatch metrics for a function invoked through ``alias``: each tick, ``per_tick``
    invocations split by the alias's weights, each version's Errors by ``error_rate`` (keyed by the
    published version number: moto reports $LATEST's image for every published version)."""

    def __init__(self, url: str, function: str, alias: str = "live", *, per_tick: int = 1000) -> None:
        self.lam, self.cw = client(url, "lambda"), client(url, "cloudwatch")
        self.function, self.alias, self.per_tick = function, alias, per_tick
        self.error_rate: dict[str, float] = {}  # published version ("2") -> share of invocations that fail
        self.routing_seen: list[dict[str, float]] = []  # version -> share, each time it changed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invocations", daemon=True)

    def start(self) -> Invocations:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - no alias yet: the next tick looks again
                pass
            self._stop.wait(0.1)

    def tick(self) -> None:
        alias = self.lam.get_alias(FunctionName=self.function, Name=self.alias)
        extra = {v: float(w) for v, w in ((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
                                          or {}).items()}
        shares = {alias["FunctionVersion"]: 1.0 - sum(extra.values()), **extra}
        if not self.routing_seen or self.routing_seen[-1] != shares:
            self.routing_seen.append(shares)
        now = datetime.now(UTC)
        for version, share in shares.items():
            calls = self.per_tick * share
            dims = [{"Name": "FunctionName", "Value": self.function},
                    {"Name": "Resource", "Value": f"{self.function}:{self.alias}"},
                    {"Name": "ExecutedVersion", "Value": version}]
            self.cw.put_metric_data(Namespace="AWS/Lambda", MetricData=[
                {"MetricName": "Invocations", "Dimensions": dims, "Value": calls, "Timestamp": now},
                {"MetricName": "Errors", "Dimensions": dims, "Value": calls * self.error_rate.get(version, 0.0),
                 "Timestamp": now},
                {"MetricName": "Duration", "Dimensions": dims, "Value": 12.0, "Timestamp": now}])


def lambda_function(url: str, name: str, image: str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v0",
                    package: str = "Image") -> str:
    """A function as the platform would create it (its role included); returns its ARN."""
    role = client(url, "iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code: dict[str, Any] = {"ImageUri": image} if package == "Image" else {"ZipFile": b"PK\x05\x06" + b"\0" * 18}
    extra = {} if package == "Image" else {"Runtime": "python3.12", "Handler": "app.handler"}
    return str(client(url, "lambda").create_function(FunctionName=name, Role=role, PackageType=package,
                                                     Code=code, **extra)["FunctionArn"])
