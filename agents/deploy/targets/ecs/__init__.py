"""The ECS target: a task definition per version, an ECS service per colour, an ALB listener's weights."""
from __future__ import annotations

from typing import Any

__all__ = ["EcsTarget"]


def __getattr__(name: str) -> Any:  # lazy: agents.deploy.targets.alb (EcsTarget's base) imports this package's modules
    if name == "EcsTarget":
        from agents.deploy.targets.ecs.target import EcsTarget

        return EcsTarget
    raise AttributeError(name)
