"""The Lambda target: a published version per deploy behind a weighted alias."""
from agents.deploy.targets.awslambda.target import LambdaTarget

__all__ = ["LambdaTarget"]
