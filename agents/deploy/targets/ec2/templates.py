"""What the EC2 target reads and makes: the base launch template, a launch template per release, the groups.

The platform (its Terraform) makes the base launch template ``<service>-<env>`` (AMI, instance type,
instance profile, security groups, IMDSv2) and the Auto Scaling groups ``<service>-<env>-blue`` and
``-green``. Each release gets a launch template of its own, ``<service>-<env>-<version>``: the base's
default version's fields (:data:`COPIED`), the release's user data, and tags on the template and its
instances. A launch template per release, not a version of the base: moto_server 5.2.5 (the AWS the tests
run) fails to launch an Auto Scaling group's instances from a version that create_launch_template_version
made with UserData (it keeps that UserData undecoded and asserts on it, moto/ec2/models/launch_templates.py
``user_data``); it is also the analogue of ECS's task definition revision. A release's template is deleted
once neither colour's group uses it; the base template is never touched.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from agents.deploy.targets.ecs.aws import Aws, AwsError
from orchestra.errors import StageFailed

COPIED = ("ImageId", "InstanceType", "IamInstanceProfile", "SecurityGroupIds", "MetadataOptions", "Monitoring",
          "BlockDeviceMappings", "KeyName", "EbsOptimized", "NetworkInterfaces")
LAUNCHED_FROM = "aws:ec2launchtemplate:id"  # the tag EC2 puts on an instance launched from a template
NOT_FOUND = ("InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateId.NotFound",
             "InvalidLaunchTemplateId.NotFoundException")


@dataclass(frozen=True)
class ReleaseTemplate:
    """A release's launch template as the deploy will make it."""

    name: str
    data: dict[str, Any]
    tags: dict[str, str]

    @property
    def content(self) -> str:
        """A digest of what the template holds: an existing template of the same name is reused only when equal."""
        return hashlib.sha256(json.dumps(self.data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_name(service: str, env: str) -> str:
    return f"{service}-{env}"


def release_name(service: str, env: str, version: str) -> str:
    """``web-staging-v1.2``; a version with characters launch template names refuse, or too long, becomes a
    safe slug with a short hash of the version (two versions never share a name)."""
    slug = re.sub(r"[^a-zA-Z0-9().\-/_]", "-", version)
    name = f"{base_name(service, env)}-{slug}"
    if slug == version and len(name) <= 128:
        return name
    return f"{name[:119]}-{hashlib.sha256(version.encode()).hexdigest()[:8]}"


def base_data(aws: Aws, service: str, env: str) -> dict[str, Any]:
    """The copied fields of the base template's default version; StageFailed when the platform has none."""
    name = base_name(service, env)
    try:
        found = aws.call("ec2", "describe_launch_template_versions", LaunchTemplateName=name,
                         Versions=["$Default"])["LaunchTemplateVersions"]
    except AwsError as exc:
        if exc.code not in NOT_FOUND:
            raise
        found = []
    if not found:
        raise StageFailed(f"the launch template {name} does not exist in {aws.region}",
                          hint="the platform (its Terraform) makes the base launch template <service>-<env> "
                               "(AMI, instance type, instance profile, security groups); nothing was deployed")
    data = found[0].get("LaunchTemplateData") or {}
    return {k: data[k] for k in COPIED if k in data}


def for_release(base: dict[str, Any], name: str, user_data: str, tags: dict[str, str]) -> ReleaseTemplate:
    encoded = base64.b64encode(user_data.encode()).decode()
    tagged = [{"Key": k, "Value": v[:256]} for k, v in sorted(tags.items())]
    data = {**base, "UserData": encoded, "TagSpecifications": [{"ResourceType": "instance", "Tags": tagged}]}
    return ReleaseTemplate(name, data, tags)


def create(aws: Aws, template: ReleaseTemplate, others_use: set[str]) -> dict[str, str]:
    """Make ``template`` (reusing a same-named one that holds the same); {LaunchTemplateId, LaunchTemplateName}.
    A same-named template with other content is replaced, unless the other colour uses it: then the new one's
    name carries the content's digest."""
    name = template.name
    existing = find(aws, name)
    if existing is not None:
        if _tags(existing).get("orchestra.content") == template.content:
            return {"LaunchTemplateId": existing["LaunchTemplateId"], "LaunchTemplateName": name}
        if name in others_use:
            name = f"{name[:111]}-{template.content}"
            if (again := find(aws, name)) is not None:
                return {"LaunchTemplateId": again["LaunchTemplateId"], "LaunchTemplateName": name}
        else:
            delete(aws, name)
    tags = [{"Key": k, "Value": v[:256]} for k, v in sorted({**template.tags,
                                                              "orchestra.content": template.content}.items())]
    made = aws.call("ec2", "create_launch_template", LaunchTemplateName=name, LaunchTemplateData=template.data,
                    TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}])["LaunchTemplate"]
    return {"LaunchTemplateId": str(made["LaunchTemplateId"]), "LaunchTemplateName": name}


def find(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        found = aws.call("ec2", "describe_launch_templates", LaunchTemplateNames=[name])["LaunchTemplates"]
    except AwsError as exc:
        if exc.code not in NOT_FOUND:
            raise
        return None
    return found[0] if found else None


def delete(aws: Aws, name: str) -> None:
    try:
        aws.call("ec2", "delete_launch_template", LaunchTemplateName=name)
    except AwsError as exc:
        if exc.code not in NOT_FOUND:
            raise


def sweep(aws: Aws, service: str, env: str, in_use: set[str]) -> list[str]:
    """Delete the release templates of ``service`` in ``env`` that no group uses; their names."""
    found = aws.call("ec2", "describe_launch_templates", Filters=[
        {"Name": "tag:orchestra.service", "Values": [service]},
        {"Name": "tag:orchestra.env", "Values": [env]}])["LaunchTemplates"]
    gone = []
    for template in found:
        name = str(template["LaunchTemplateName"])
        if name != base_name(service, env) and name not in in_use:
            delete(aws, name)
            gone.append(name)
    return gone


def image_of(aws: Aws, name: str) -> str | None:
    """The image a release template runs (its ``orchestra.image`` tag); None for the base or a deleted one."""
    found = find(aws, name)
    return _tags(found).get("orchestra.image") if found else None


def _tags(template: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in template.get("Tags") or []}


def group(aws: Aws, name: str) -> dict[str, Any] | None:
    """The Auto Scaling group ``name`` as describe_auto_scaling_groups has it; None when it does not exist."""
    found = aws.call("autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[name])
    return next(iter(found.get("AutoScalingGroups") or []), None)


def launched_from(aws: Aws, instance_ids: list[str]) -> dict[str, str | None]:
    """Instance id -> the id of the launch template it was launched from (EC2's own tag)."""
    if not instance_ids:
        return {}
    out: dict[str, str | None] = {}
    for reservation in aws.call("ec2", "describe_instances", InstanceIds=instance_ids)["Reservations"]:
        for instance in reservation["Instances"]:
            out[instance["InstanceId"]] = _tags(instance).get(LAUNCHED_FROM)
    return out
