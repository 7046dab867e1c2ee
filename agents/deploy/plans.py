"""What the deploy stage deploys: the images of the run's build, and each service's :class:`Plan` made from
them and the configuration (strategy, canary steps, health, replicas, environment, its dependencies' URLs)."""
from __future__ import annotations

from typing import Any

from agents.context import AgentContext
from agents.deploy.strategies import STRATEGIES
from agents.deploy.targets.base import Plan
from agents.deploy.targets.state import get_live
from orchestra.errors import StageFailed
from orchestra.events import EventType


def plan_for(ctx: AgentContext, service: str, image: dict[str, Any], pause_s: float | None) -> Plan:
    """The deploy plan of one service from the configuration and the build's image."""
    config = ctx.config
    spec = config.service(service)
    strategy = ctx.run.strategy or config.strategy(ctx.run.env)
    if strategy not in STRATEGIES:
        raise StageFailed(f"unknown strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    canary = config.deployment.canary
    return Plan(service=service, env=ctx.run.env, image=image["image"], version=image["version"],
                ref=image.get("ref"), run_id=ctx.run.id, health=spec.health, port_hint=spec.port,
                extra_env={**spec.env_dict(), **_dependency_urls(ctx, spec.depends_on)},
                strategy=strategy, steps=ctx.run.canary_steps or list(canary.steps),  # the risk route's, if any
                pause_s=canary.analysis_interval if pause_s is None else pause_s,
                keep_s=config.deployment.blue_green.keep_previous, replicas=spec.replicas,
                metrics_path=spec.metrics)


def _dependency_urls(ctx: AgentContext, depends_on: list[str]) -> dict[str, str]:
    """``<NAME>_URL`` for each dependency: its edge in the same environment."""
    urls = {}
    for name in depends_on:
        state = get_live(ctx.redis, name, ctx.run.env)
        if state is not None:
            urls[f"{name.upper().replace('-', '_')}_URL"] = state.url
    return urls


def built_images(ctx: AgentContext) -> dict[str, dict[str, Any]]:
    """The images of the run's latest successful ``build_ready`` event."""
    for event in reversed(ctx.bus.replay(ctx.run.id)):
        if event.type == EventType.BUILD_READY and event.data.get("passed", True):
            return dict(event.data.get("images", {}))
    return {}
