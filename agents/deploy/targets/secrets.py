"""The values of ``secrets.keys``, resolved before a deploy moves anything, and held for redaction.

:func:`resolve` reads each key from the project's ``secrets.manager``: ``env``, the bot's environment,
or the ``KEY=value`` file the operator names in ``ORCHESTRA_SECRETS_FILE`` (never one the repository
names); ``aws_secrets_manager``, the secret ``<prefix><KEY>`` (``ecs.secret_prefix``, default ``<env>/``)
through boto3. A missing key stops the deploy naming the key, before any target is touched. Every value found
is held by :mod:`orchestra.redaction`, so events, logs, Slack threads and prompts show ``[REDACTED]``.

Which target gets what: the local target puts the values in the container's environment; Kubernetes
puts them in a Secret the pods reference (``kubernetes`` manager: the platform's own Secret, checked
for every key); ECS gets Secrets Manager ARNs, never values (its target resolves them); EC2 instances read
them from Secrets Manager at boot (its target checks each exists); Lambda refuses.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agents.deploy.targets.ecs.aws import Aws, AwsError
from orchestra.config import ProjectConfig
from orchestra.errors import StageFailed
from orchestra.redaction import hold

RESOLVED_HERE = {"docker": ("env", "aws_secrets_manager"), "kubernetes": ("env", "aws_secrets_manager")}


class MissingSecret(StageFailed):
    """A key of ``secrets.keys`` has no value where the manager looks; nothing was deployed."""


def resolve(config: ProjectConfig, env: str, runtime: str, environ: Mapping[str, str] | None = None,
            *, aws: Aws | None = None, secrets_file: Path | None = None) -> dict[str, str]:
    """KEY -> value for a ``runtime`` that needs the values (docker, kubernetes); {} otherwise (ECS and EC2
    check their Secrets Manager secrets themselves, the ``kubernetes`` manager's Secret is checked by the
    Kubernetes target)."""
    keys, manager = list(config.secrets.keys), config.secrets.manager
    if not keys or manager not in RESOLVED_HERE.get(runtime, ()):
        if keys and manager == "kubernetes" and runtime != "kubernetes":
            raise StageFailed(f"secrets.manager `kubernetes` cannot serve a `{runtime}` service",
                              hint="use `env` or `aws_secrets_manager`, or run the service on kubernetes")
        return {}
    if manager == "env":
        where = "the bot's environment"
        if secrets_file is not None:
            environ, where = read_secrets_file(secrets_file), f"ORCHESTRA_SECRETS_FILE {secrets_file}"
        environ = os.environ if environ is None else environ
        values = {k: environ.get(k, "") for k in keys}
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise MissingSecret(f"secret {', '.join(missing)} is missing: not set in {where}",
                                hint="set it there (KEY=value); nothing was deployed")
    else:
        values = _from_secrets_manager(config, env, keys, aws)
    hold(*values.values())
    return values


def read_secrets_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, blank lines, optional quotes) of the operator's secrets file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise StageFailed(f"cannot read ORCHESTRA_SECRETS_FILE {path}: {exc.strerror}",
                          hint="point it at a readable file of KEY=value lines, or unset it") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise StageFailed(f"ORCHESTRA_SECRETS_FILE {path} line {number} is not KEY=value",
                              hint="one KEY=value per line; the value is not shown here")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _from_secrets_manager(config: ProjectConfig, env: str, keys: list[str], aws: Aws | None) -> dict[str, str]:
    policy = config.environment(env)
    prefix = (policy.ecs.secret_prefix if policy.ecs else "{env}/").replace("{env}", env)
    region = (policy.ecs.region if policy.ecs else None) or (policy.lambda_.region if policy.lambda_ else None)
    own = aws is None
    aws = aws or Aws(region)
    values: dict[str, str] = {}
    try:
        for key in keys:
            try:
                found = aws.call("secretsmanager", "get_secret_value", SecretId=prefix + key)
            except AwsError as exc:
                if exc.code != "ResourceNotFoundException":
                    raise
                raise MissingSecret(f"secret {key} is missing: no Secrets Manager secret {prefix}{key} in "
                                    f"{aws.region}", hint=f"create it (aws secretsmanager create-secret --name "
                                    f"{prefix}{key}); nothing was deployed") from exc
            value = found.get("SecretString")
            if not value:
                raise MissingSecret(f"secret {key} is empty or binary in Secrets Manager ({prefix}{key})",
                                    hint="store it as a non-empty SecretString; nothing was deployed")
            values[key] = str(value)
    finally:
        if own:
            aws.close()
    return values
