"""The ECS target: a task definition per version, an ECS service per colour, an ALB listener's weights."""
from agents.deploy.targets.ecs.target import EcsTarget

__all__ = ["EcsTarget"]
