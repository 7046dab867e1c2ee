"""The applied Terraform's outputs: what the deploy may read, and what never leaves the worker.

``terraform output -json`` gives every output with its ``sensitive`` flag. The non-sensitive ones
(cluster, listener and target-group ARNs, URLs) go into the ``iac_ready`` event and onto the run; a
sensitive one is named, never shown, and its value is held for redaction so that no later message
(a failure, a log line) can carry it either. The state itself is never read here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis import Redis

from agents.iac.checks import last_error
from agents.iac.terraform import Terraform
from orchestra.config.types import Ec2Fleet, EcsCluster, LambdaFunction
from orchestra.errors import StageFailed
from orchestra.redaction import hold, redact_data

MAX_OUTPUTS_CHARS = 20_000  # what the event carries; a larger set is cut, with the names of the rest
# The last applied outputs of a workspace (project, environment), as JSON: what its deploy targets read.
OUTPUTS_KEY = "orchestra:iac-outputs:{project}:{env}"
# Output name -> the field of environments.<env>.ecs it fills (the generated outputs.tf's names).
ECS_FIELDS = {"ecs_cluster": "cluster", "ecs_listener": "listener", "ecs_subnets": "subnets",
              "ecs_security_groups": "security_groups", "ecs_execution_role": "execution_role"}
EC2_FIELDS = {"ec2_listener": "listener"}  # environments.<env>.ec2's fields the generated outputs_ec2.tf fills


@dataclass
class Outputs:
    """The outputs an apply left: the shown values by name, and the names of the withheld ones."""

    values: dict[str, Any] = field(default_factory=dict)
    sensitive: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = ", ".join(sorted(self.values)) or "none"
        withheld = f"; sensitive, not shown: {', '.join(sorted(self.sensitive))}" if self.sensitive else ""
        return f"outputs: {shown}{withheld}"


def read(tf: Terraform) -> Outputs:
    """``terraform output -json`` in ``tf``'s folder, split into shown and withheld outputs."""
    done = tf.run("output", "-json", "-no-color", timeout=120)
    if done.returncode != 0:
        raise StageFailed(f"the plan was applied, but `{tf.name} output` failed: {last_error(done.stderr)}",
                          hint="run the deploy again once the outputs can be read; the state holds what was made")
    try:
        raw = json.loads(done.stdout or "{}")
    except ValueError as exc:
        raise StageFailed(f"`{tf.name} output -json` did not answer with JSON") from exc
    return split(raw)


def split(raw: dict[str, Any]) -> Outputs:
    """Shown and withheld outputs from ``terraform output -json``'s document."""
    found = Outputs()
    room = MAX_OUTPUTS_CHARS
    for name, output in sorted(raw.items()):
        if not isinstance(output, dict):
            continue
        if output.get("sensitive"):
            _hold(output.get("value"))
            found.sensitive.append(name)
            continue
        value = redact_data(output.get("value"))
        size = len(json.dumps(value, default=str))
        found.values[name] = value if size <= room else "(too long for the event)"
        room -= min(size, room)
    return found


def _hold(value: Any) -> None:
    """Every string inside a sensitive output, held so that redaction replaces it wherever it appears."""
    if isinstance(value, str):
        hold(value)
    elif isinstance(value, dict):
        for item in value.values():
            _hold(item)
    elif isinstance(value, list):
        for item in value:
            _hold(item)
    elif value is not None:
        hold(str(value))


def remember(redis: Redis, project: str, env: str, values: dict[str, Any]) -> None:
    """Keep a workspace's applied outputs for its deploy targets (the last apply's win)."""
    redis.set(OUTPUTS_KEY.format(project=project, env=env), json.dumps(values))


def applied(redis: Redis, project: str, env: str) -> dict[str, Any]:
    """The workspace's last applied outputs; empty when nothing was applied there."""
    raw = redis.get(OUTPUTS_KEY.format(project=project, env=env))
    return dict(json.loads(raw)) if raw else {}


def ecs_settings(redis: Redis, project: str, env: str, configured: EcsCluster | None) -> EcsCluster | None:
    """``environments.<env>.ecs`` with what the last apply made laid over it: its cluster, listener, subnets,
    security groups and execution role (the Terraform's outputs of those names; the target groups keep
    the names both use). None when neither says anything; :class:`StageFailed` when together they do not
    make valid ECS settings (an output that is not a listener's ARN, a FARGATE network missing)."""
    return _laid_over(redis, project, env, configured, EcsCluster, ECS_FIELDS, "ecs", "ECS")


def ec2_settings(redis: Redis, project: str, env: str, configured: Ec2Fleet | None) -> Ec2Fleet | None:
    """``environments.<env>.ec2`` with the last apply's listener (output ``ec2_listener``) laid over it; the
    launch templates and Auto Scaling groups go by the names both use. None when neither says anything;
    :class:`StageFailed` naming the field when together they are not valid EC2 settings."""
    return _laid_over(redis, project, env, configured, Ec2Fleet, EC2_FIELDS, "ec2", "EC2")


def _laid_over(redis: Redis, project: str, env: str, configured: Any, model: Any, fields: dict[str, str],
               section: str, what: str) -> Any:
    made = {field: value for name, field in fields.items() if (value := applied(redis, project, env).get(name))}
    if not made:
        return configured
    base = configured.model_dump() if configured is not None else {}
    try:
        return model.model_validate({**base, **made})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise StageFailed(f"the {what} settings {env}'s Terraform outputs make are not valid: {problems}",
                          hint=f"check the outputs {', '.join(sorted(fields))} of the Terraform, or "
                               f"environments.{env}.{section}") from exc


def lambda_settings(redis: Redis, project: str, env: str,
                    configured: LambdaFunction | None) -> LambdaFunction | None:
    """``environments.<env>.lambda``, or, when it is not set and the last apply made Lambda aliases (output
    ``lambda_aliases``: service -> alias ARN), the defaults the generator names them by (function
    ``{service}-{env}``, alias ``live``) in the aliases' region. A configured region-less section gets that
    region too; its other values win. None when neither says anything."""
    aliases = applied(redis, project, env).get("lambda_aliases")
    if not isinstance(aliases, dict) or not aliases:
        return configured
    arn = str(next(iter(aliases.values())))
    parts = arn.split(":")
    if len(parts) < 8 or parts[:3] != ["arn", "aws", "lambda"] or parts[5] != "function" or not parts[3]:
        raise StageFailed(f"the Terraform output lambda_aliases of {env} holds `{arn[:200]}`, not a Lambda alias ARN",
                          hint="lambda_aliases maps each service to its alias's ARN "
                               "(arn:aws:lambda:<region>:<account>:function:<name>:<alias>)")
    if configured is None:
        return LambdaFunction(region=parts[3])
    return configured if configured.region else configured.model_copy(update={"region": parts[3]})
