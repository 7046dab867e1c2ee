"""The EC2 platform on a real ``moto_server``: what the generated Terraform makes, and what AWS itself does.

:func:`ec2_platform` creates through boto3 what the EC2 Terraform would (a VPC and subnets, an ALB with one
listener, instance target groups, per service a base launch template and two Auto Scaling groups at 0).
moto really launches a group's instances from its launch template and registers them healthy in the
group's target groups; :class:`Crashing` plays an image that crashes (it stops those instances, whose
targets turn ``unused``) and :class:`Ec2Alb` the load balancer's CloudWatch counts, reading the image a
group runs from its launch template's tag. Both act only through the AWS API, with their own client.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from tests.support.moto import REGION, Alb, Platform, client, session


@dataclass
class Fleet(Platform):
    """What the EC2 platform's Terraform makes: besides the ALB, per service a base launch template and two
    Auto Scaling groups (``<service>-<env>-blue``/``-green``) in instance target groups."""

    image_id: str = ""
    subnets: list[str] = field(default_factory=list)


def ec2_platform(url: str, services: tuple[str, ...] = ("web",), env: str = "staging",
                 max_size: int = 4) -> Fleet:
    """A VPC, an ALB with one listener forwarding to each service's blue group, instance target groups, and
    per service the base launch template (an AMI moto lists as Amazon's, IMDSv2 required) and the two Auto
    Scaling groups at 0, each in its colour's target group, as the generated Terraform makes them."""
    own = session(url)
    ec2, elb, asg = (own.client(n, endpoint_url=url) for n in ("ec2", "elbv2", "autoscaling"))  # type: ignore[call-overload]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")
               ["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    sg = ec2.create_security_group(GroupName="shop", Description="shop", VpcId=vpc)["GroupId"]
    lb = elb.create_load_balancer(Name="shop", Subnets=subnets, SecurityGroups=[sg])["LoadBalancers"][0]
    image = ec2.describe_images(Owners=["amazon"], Filters=[  # Amazon Linux 2023 (unfiltered: 1,177 images, 1.5 s)
        {"Name": "name", "Values": ["al2023-ami-2023*-x86_64"]}])["Images"][0]["ImageId"]
    groups = {}
    for service in services:
        ec2.create_launch_template(LaunchTemplateName=f"{service}-{env}", LaunchTemplateData={
            "ImageId": image, "InstanceType": "t3.micro", "SecurityGroupIds": [sg],
            "IamInstanceProfile": {"Name": f"{service}-{env}-instance"}, "Monitoring": {"Enabled": True},
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1}})
        for colour in ("blue", "green"):
            name = f"{service}-{colour}"
            groups[name] = elb.create_target_group(Name=name, Protocol="HTTP", Port=8080, VpcId=vpc,
                                                   TargetType="instance", HealthCheckPath="/health"
                                                   )["TargetGroups"][0]["TargetGroupArn"]
            asg.create_auto_scaling_group(
                AutoScalingGroupName=f"{service}-{env}-{colour}", MinSize=0, MaxSize=max_size, DesiredCapacity=0,
                LaunchTemplate={"LaunchTemplateName": f"{service}-{env}", "Version": "$Default"},
                VPCZoneIdentifier=",".join(subnets), TargetGroupARNs=[groups[name]], HealthCheckType="ELB")
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "forward", "TargetGroupArn": groups[f"{services[0]}-blue"]}])["Listeners"][0]["ListenerArn"]
    return Fleet(url, "", listener, lb["LoadBalancerArn"], subnets[0], sg, groups, image_id=image, subnets=subnets)


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


class Crashing:
    """Instances whose image crashes: each running instance tagged with an image in ``images`` is stopped (its
    target turns ``unused``, as a crashed container's health checks would fail), through the EC2 API."""

    def __init__(self, url: str, images: set[str], *, interval_s: float = 0.02) -> None:
        self.ec2 = client(url, "ec2")
        self.images = images
        self.stopped: list[str] = []
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crashing", daemon=True)

    def start(self) -> Crashing:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.crash()
            except Exception:  # noqa: BLE001 - an instance terminated between calls: the next round looks again
                pass
            self._stop.wait(self.interval_s)

    def crash(self) -> None:
        found = self.ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
        doomed = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]
                  if tags_of(i).get("orchestra.image") in self.images]
        if doomed:
            self.ec2.stop_instances(InstanceIds=doomed)
            self.stopped += doomed


class Ec2Alb(Alb):
    """:class:`Alb` for Auto Scaling groups: the image serving a target group is the ``orchestra.image`` tag of
    the launch template of the group (with instances wanted) registered in it."""

    def _images(self) -> dict[str, str]:
        asg, ec2 = client(self.platform.url, "autoscaling"), client(self.platform.url, "ec2")
        out = {}
        for group in asg.describe_auto_scaling_groups()["AutoScalingGroups"]:
            template = (group.get("LaunchTemplate") or {}).get("LaunchTemplateName")
            if not group.get("TargetGroupARNs") or not group["DesiredCapacity"] or not template:
                continue
            found = ec2.describe_launch_templates(LaunchTemplateNames=[template])["LaunchTemplates"][0]
            out[group["TargetGroupARNs"][0]] = tags_of(found).get("orchestra.image", "")
        return out
