"""Plan: what a deploy would do (services in order, each environment's strategy and gate); starts nothing."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from handlers.reply import Reply, ReplyKind, Who
from orchestra.config.graph import affected_services
from orchestra.intents import ENVIRONMENTS, Intent

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig


@dataclass(frozen=True)
class PlanEnv:
    name: str
    strategy: str
    approval: bool
    branches: Sequence[str]


def handle(intent: Intent, who: Who, *, config: ProjectConfig, changed_files: Sequence[str]) -> Reply:
    """The plan for ``intent.ref`` (a commit), from the configuration at that commit and the changed files."""
    changed = affected_services(changed_files, config.service_paths()) if changed_files \
        else config.service_names()
    envs = [PlanEnv(name, config.environment(name).strategy or config.deployment.strategy,
                    config.environment(name).approval_required, config.environment(name).branches)
            for name in ENVIRONMENTS]
    return Reply(ReplyKind.PLAN, public=True,
                 data={"sha": intent.ref or "", "services": config.deploy_order(changed), "envs": envs})

