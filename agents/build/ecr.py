"""Images go where the target pulls from: an ECR registry (``ORCHESTRA_REGISTRY`` =
``<account>.dkr.ecr.<region>.amazonaws.com``) gets its repository created when missing and a login
from ``ecr:GetAuthorizationToken`` before the push; any other registry is pushed to as it is.

The AWS calls go through :class:`agents.deploy.targets.ecs.aws.Aws` (the standard credential chain,
``AWS_ENDPOINT_URL``, errors that name the IAM action).
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from agents.deploy.targets.ecs.aws import Aws, AwsError
from orchestra.errors import StageFailed

ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def ecr_region(registry: str) -> str | None:
    """The region of an ECR registry host; None for any other registry."""
    match = ECR_HOST.match(registry)
    return match.group("region") if match else None


def push_auth(registry: str, repository: str, *, aws: Aws | None = None) -> dict[str, str] | None:
    """The credentials to push ``repository`` (``<registry>/<name>``) with, after making sure an ECR
    repository exists; None (no AWS call) for a registry that is not ECR."""
    region = ecr_region(registry)
    if region is None:
        return None
    own = aws is None
    aws = aws or Aws(region)
    try:
        ensure_repository(aws, repository.removeprefix(f"{registry}/"), registry)
        return login(aws, registry)
    finally:
        if own:
            aws.close()


def ensure_repository(aws: Aws, name: str, registry: str) -> dict[str, Any]:
    """The ECR repository ``name``, created (tags immutable per version, scanned on push) when missing."""
    account = registry.split(".", 1)[0]
    try:
        found = aws.call("ecr", "describe_repositories", registryId=account, repositoryNames=[name])
        return dict(found["repositories"][0])
    except AwsError as exc:
        if exc.code != "RepositoryNotFoundException":
            raise
    created = aws.call("ecr", "create_repository", registryId=account, repositoryName=name,
                       imageScanningConfiguration={"scanOnPush": True}, imageTagMutability="MUTABLE",
                       tags=[{"Key": "orchestra.managed", "Value": "true"}])
    return dict(created["repository"])


def login(aws: Aws, registry: str) -> dict[str, str]:
    """Docker credentials for ``registry`` from ``ecr:GetAuthorizationToken`` (valid 12 hours)."""
    account = registry.split(".", 1)[0]
    data = aws.call("ecr", "get_authorization_token", registryIds=[account])["authorizationData"]
    if not data:
        raise StageFailed(f"ECR returned no authorization for {registry}",
                          hint="check that the bot's credentials belong to (or may push to) account " + account)
    try:
        user, sep, password = base64.b64decode(data[0]["authorizationToken"], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise StageFailed("ECR returned an authorization token that is not base64 user:password",
                          hint="check AWS_ENDPOINT_URL: it may not be ECR") from exc
    if not sep or not password:
        raise StageFailed("ECR returned an authorization token without a password",
                          hint="check AWS_ENDPOINT_URL: it may not be ECR")
    return {"username": user, "password": password, "serveraddress": registry}
