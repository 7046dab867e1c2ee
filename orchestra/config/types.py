"""Small value types of the configuration file: durations, percentages, names."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``, ``"5m"``, ``"1h30m"``, ``"500ms"``, ``"2d"`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"`{value}` is not a duration; write e.g. 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        raise ValueError(f"`{value}` is not a duration; write e.g. 30s, 5m or 1h")
    if seconds < 0:
        raise ValueError(f"`{value}` is negative; a duration must be 0 or more")
    return seconds


def _parse_duration_text(value: str) -> float:
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"`{value}` is not a duration; write e.g. 30s, 5m, 1h30m (units: ms, s, m, h, d)")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_percent(value: object) -> float:
    """A percentage as a number of percent: ``"2%"`` -> 2.0, ``5`` -> 5.0, ``"0.5%"`` -> 0.5."""
    if isinstance(value, bool):
        raise ValueError(f"`{value}` is not a percentage; write e.g. 2% or 2")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*%?\s*", value):
        number = float(value.strip().rstrip("%"))
    else:
        raise ValueError(f"`{value}` is not a percentage; write e.g. 2% or 2")
    if not 0 <= number <= 100:
        raise ValueError(f"`{value}` is out of range; a percentage is between 0% and 100%")
    return number


def check_name(value: str) -> str:
    """Service and project names: lowercase letters, digits and '-', as Docker and DNS need."""
    if not _NAME.match(value):
        raise ValueError(f"`{value}` is not a valid name; use lowercase letters, digits and '-' "
                         "(start and end with a letter or digit, at most 63 characters)")
    return value


def check_env_key(value: str) -> str:
    """Environment variable and secret names."""
    if not _ENV_KEY.match(value):
        raise ValueError(f"`{value}` is not a valid variable name; use letters, digits and '_'")
    return value


def check_url_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f"`{value}` is not a URL path; it must start with '/', e.g. /health")
    return value


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


Duration = Annotated[float, BeforeValidator(parse_duration)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
Name = Annotated[str, AfterValidator(check_name)]
EnvKey = Annotated[str, AfterValidator(check_env_key)]
UrlPath = Annotated[str, AfterValidator(check_url_path)]


class KubernetesCluster(BaseModel):
    """Where an environment's ``runtime: kubernetes`` services go (``environments.<env>.kubernetes``)."""

    model_config = ConfigDict(extra="forbid")

    kubeconfig: str | None = None  # a kubeconfig file; none: in-cluster config inside a pod, else ~/.kube/config
    context: str | None = None  # a context of that file; none: its current context
    namespace: Name = "default"
    httproute: str | None = None  # a Gateway API HTTPRoute ("{service}" is replaced) for exact canary weights
    version: str = "1.32"  # the cluster's Kubernetes version: manifests are validated against its schema
    rollout_timeout: Duration = 300.0  # how long a Deployment may take to become available

    @field_validator("httproute")
    @classmethod
    def _route_name(cls, value: str | None) -> str | None:
        if value is not None:
            check_name(value.replace("{service}", "x"))
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _known_version(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError(f"`{value}` must be quoted, e.g. \"1.32\" (YAML reads 1.30 as the number 1.3)")
        if not re.fullmatch(r"1\.\d{1,2}", value):
            raise ValueError(f"`{value}` is not a Kubernetes version; write it as major.minor, e.g. \"1.32\"")
        return value


_ARN = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:\S+")
ECS_CPU = (256, 512, 1024, 2048, 4096, 8192, 16384)


def check_arn(value: str, kind: str) -> str:
    """An AWS ARN of ``kind`` (e.g. ``elasticloadbalancing`` + ``listener/``)."""
    service, _, resource = kind.partition(":")
    if not _ARN.fullmatch(value) or value.split(":")[2] != service or resource not in value.split(":", 5)[5]:
        raise ValueError(f"`{value}` is not the ARN of a {resource.rstrip('/') or service}; copy it from the "
                         f"AWS console or `aws {service} describe-...`, e.g. arn:aws:{service}:us-east-1:"
                         f"123456789012:{resource}...")
    return value


class EcsCluster(BaseModel):
    """Where an environment's ``runtime: ecs`` services go (``environments.<env>.ecs``). The platform
    (Terraform, the console) creates the cluster, the ALB listener and the two target groups of each
    service; the deploy registers task definitions, creates one ECS service per colour and moves the
    listener's weights."""

    model_config = ConfigDict(extra="forbid")

    cluster: str  # the ECS cluster's name or ARN
    listener: str  # the ALB listener whose forward action (default or a rule) names the service's target groups
    target_groups: tuple[str, str] = ("{service}-blue", "{service}-green")  # names; "{service}", "{env}" replaced
    region: str | None = None  # none: the standard chain (AWS_REGION, AWS_DEFAULT_REGION, the profile)
    launch_type: Literal["FARGATE", "EC2"] = "FARGATE"
    subnets: list[str] = []  # awsvpc networking (required for FARGATE)
    security_groups: list[str] = []
    assign_public_ip: bool = False
    cpu: int = 256  # task CPU units
    memory: int = 512  # task memory, MiB
    execution_role: str | None = None  # the task execution role: pulls from ECR, reads secrets, writes logs
    log_group: str = "/orchestra/{service}"  # CloudWatch Logs group of the awslogs driver (created if missing)
    secret_prefix: str = "{env}/"  # each of secrets.keys is the Secrets Manager secret <prefix><KEY>
    rollout_timeout: Duration = 600.0  # how long a colour's targets may take to become healthy

    @field_validator("listener")
    @classmethod
    def _listener_arn(cls, value: str) -> str:
        return check_arn(value, "elasticloadbalancing:listener/")

    @field_validator("execution_role")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        return None if value is None else check_arn(value, "iam:role/")

    @field_validator("cpu")
    @classmethod
    def _cpu_units(cls, value: int) -> int:
        if value not in ECS_CPU:
            raise ValueError(f"`{value}` is not a task CPU size; use one of {', '.join(map(str, ECS_CPU))}")
        return value

    @field_validator("memory")
    @classmethod
    def _memory_mib(cls, value: int) -> int:
        if not 512 <= value <= 122880:
            raise ValueError(f"`{value}` MiB is not a task memory size; use 512 to 122880 (MiB)")
        return value

    @field_validator("target_groups")
    @classmethod
    def _two_names(cls, value: tuple[str, str]) -> tuple[str, str]:
        return two_target_groups(value)

    @model_validator(mode="after")
    def _fargate_needs_a_network(self) -> EcsCluster:
        if self.launch_type == "FARGATE" and not self.subnets:
            raise ValueError("FARGATE tasks need `subnets` (and usually `security_groups`): list the "
                             "subnet ids the tasks run in")
        if self.launch_type == "FARGATE" and self.execution_role is None:
            raise ValueError("FARGATE tasks need `execution_role` (the role that pulls the image, reads the "
                             "secrets and writes the logs): give its ARN")
        return self


def two_target_groups(value: tuple[str, str]) -> tuple[str, str]:
    """The blue and green target group names of a service (``{service}``, ``{env}`` replaced)."""
    for name in value:
        probe = name.replace("{service}", "x").replace("{env}", "x")
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?", probe):
            raise ValueError(f"`{name}` is not a target group name (letters, digits and '-', at most 32)")
    if value[0] == value[1]:
        raise ValueError("the two target groups must differ: one per colour")
    return value


class Ec2Fleet(BaseModel):
    """Where an environment's ``runtime: ec2`` services go (``environments.<env>.ec2``). The platform
    (the generated Terraform, or your own) creates per service a launch template ``<service>-<env>`` (AMI,
    instance type, instance profile, security groups) and two Auto Scaling groups ``<service>-<env>-blue``
    and ``-green``, each in its colour's target group (instance targets) behind one ALB listener. Each
    deploy makes a launch template of its own (``<service>-<env>-<version>``, the base's fields and user data
    that runs the image), points the idle colour's group at it, waits for its healthy targets and moves the
    listener's weights."""

    model_config = ConfigDict(extra="forbid")

    listener: str  # the ALB listener whose forward action (default or a rule) names the service's target groups
    target_groups: tuple[str, str] = ("{service}-blue", "{service}-green")  # names; "{service}", "{env}" replaced
    region: str | None = None  # none: the standard chain (AWS_REGION, AWS_DEFAULT_REGION, the profile)
    log_group: str = "/orchestra/{service}"  # CloudWatch Logs group the instances' containers write to
    secret_prefix: str = "{env}/"  # each of secrets.keys is the Secrets Manager secret <prefix><KEY>
    rollout_timeout: Duration = 600.0  # how long a colour's instances may take to become healthy targets
    instance_type: str = "t3.micro"  # the generated base launch template's (Terraform of your own: its own choice)

    @field_validator("listener")
    @classmethod
    def _listener_arn(cls, value: str) -> str:
        return check_arn(value, "elasticloadbalancing:listener/")

    @field_validator("target_groups")
    @classmethod
    def _two_names(cls, value: tuple[str, str]) -> tuple[str, str]:
        return two_target_groups(value)

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,15}\.[a-z0-9]{1,16}", value):
            raise ValueError(f"`{value[:80]}` is not an EC2 instance type; write it as AWS names it, e.g. t3.micro "
                             "or m7g.large")
        return value


class LambdaFunction(BaseModel):
    """Where an environment's ``runtime: lambda`` services go (``environments.<env>.lambda``). The platform
    creates the function (package type Image, its role); each deploy publishes a version of it and
    moves the alias's weights."""

    model_config = ConfigDict(extra="forbid")

    function: str = "{service}-{env}"  # the function's name ("{service}", "{env}" replaced)
    alias: str = "live"  # the alias callers invoke; canary weights go on it (AdditionalVersionWeights)
    region: str | None = None  # none: the standard chain (AWS_REGION, AWS_DEFAULT_REGION, the profile)
    update_timeout: Duration = 300.0  # how long a code update or a new version may take to become Active

    @field_validator("function", "alias")
    @classmethod
    def _lambda_name(cls, value: str) -> str:
        probe = value.replace("{service}", "x").replace("{env}", "x")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", probe) or probe.isdigit():
            raise ValueError(f"`{value}` is not a Lambda function or alias name (letters, digits, '-' and '_', "
                             "at most 64, not only digits)")
        return value
