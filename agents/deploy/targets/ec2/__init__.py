"""The EC2 target: a launch template per release, an Auto Scaling group per colour, an ALB listener's weights."""
from agents.deploy.targets.ec2.target import Ec2Target

__all__ = ["Ec2Target"]
