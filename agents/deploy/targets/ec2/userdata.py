"""The user data of an EC2 release: a bash script that runs the image at boot.

It installs and starts Docker when the AMI has none (Amazon Linux 2023: ``dnf install -y docker``), logs
in to ECR when the image is on ECR, reads each of ``secrets.keys`` from Secrets Manager with the instance
role into the environment (user data is readable by anyone with ``ec2:DescribeInstanceAttribute``, so it
names the secrets, never their values), and runs the image with ``docker run`` on the service's port,
its variables and the ``awslogs`` driver (stream ``<version>/<instance id>``, the id from IMDSv2).

Every value from the repository's config or the build (image, version, variables, names) is written with
:func:`shlex.quote`: bash reads each as one literal word, never as code. AWS takes at most 16 KB of
user data; a bigger script is refused, saying which part is big.
"""
from __future__ import annotations

import re
import shlex

from agents.deploy.targets.base import Plan
from agents.deploy.targets.ecs.resources import container_env, stream_prefix
from orchestra.errors import StageFailed

LIMIT = 16 * 1024  # bytes, before base64: AWS's limit for user data
IMDS = "http://169.254.169.254/latest"
ECR = re.compile(r"(?P<host>\d{12}\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?)/")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def script(plan: Plan, *, region: str, log_group: str, secrets: dict[str, str]) -> str:
    """The boot script of ``plan``'s instances; ``secrets`` is KEY -> the Secrets Manager secret id."""
    q = shlex.quote
    port = plan.port_hint or 5000
    lines = ["#!/bin/bash", "set -euo pipefail",
             "# written by the deploy; every value below is quoted (none in a comment: a newline would end it)",
             "if ! command -v docker >/dev/null 2>&1; then dnf install -y docker; fi",
             "systemctl enable --now docker",
             f"TOKEN=$(curl -fsS -X PUT {IMDS}/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')",
             f'INSTANCE_ID=$(curl -fsS -H "X-aws-ec2-metadata-token: $TOKEN" {IMDS}/meta-data/instance-id)']
    if (ecr := ECR.match(plan.image)) is not None:
        lines.append(f"aws ecr get-login-password --region {q(ecr['region'])} | "
                     f"docker login --username AWS --password-stdin {q(ecr['host'])}")
    for key, secret_id in sorted(secrets.items()):
        if not NAME.fullmatch(key):
            raise StageFailed(f"the secret key `{key}` is not a variable name",
                              hint="name secrets.keys with letters, digits and '_' (not starting with a digit)")
        lines.append(f"{key}=$(aws secretsmanager get-secret-value --region {q(region)} --secret-id "
                     f"{q(secret_id)} --query SecretString --output text)")
        lines.append(f"export {key}")
    run = ["docker", "run", "-d", "--name", q(plan.service), "--restart", "unless-stopped", "-p", f"{port}:{port}"]
    for name, value in sorted(container_env(plan, secrets).items()):
        run += ["-e", q(f"{name}={value}")]
    for key in sorted(secrets):
        run += ["-e", key]  # the value from this script's environment: never on a command line
    run += ["--log-driver", "awslogs", "--log-opt", q(f"awslogs-region={region}"),
            "--log-opt", q(f"awslogs-group={log_group}"), "--log-opt", "awslogs-create-group=true",
            "--log-opt", q(f"awslogs-stream={stream_prefix(plan.version)}/") + '"$INSTANCE_ID"', q(plan.image)]
    lines += [f"docker rm -f {q(plan.service)} >/dev/null 2>&1 || true", " ".join(run), ""]
    text = "\n".join(lines)
    _fits(text, plan)
    return text


def _fits(text: str, plan: Plan) -> None:
    size = len(text.encode())
    if size <= LIMIT:
        return
    parts = {f"services[].env {k}": len(f"{k}={v}".encode()) for k, v in plan.extra_env.items()}
    parts["the image name"] = len(plan.image.encode())
    parts["the version"] = len(plan.version.encode())
    biggest, bytes_ = max(parts.items(), key=lambda p: p[1])
    raise StageFailed(f"the user data of {plan.service} {plan.version[:40]} is {size} bytes, over AWS's "
                      f"{LIMIT} (16 KB): the biggest part is {biggest} ({bytes_} bytes)",
                      hint="keep large values out of services[].env: put them in Secrets Manager "
                           "(secrets.keys), which the instances read at boot; nothing was deployed")
