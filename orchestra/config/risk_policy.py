"""The `risk:` section of devops_orchestra.yaml: the path each risk level of a change takes.

It is policy: it is read from the trusted source like the environments' gates
(:mod:`orchestra.config.trusted`), so a branch cannot soften the path its own change takes. The decision
itself is :func:`agents.analysis.route.decide`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from orchestra.config.environments import StrictModel
from orchestra.config.types import Duration, did_you_mean
from orchestra.limits import WATCH_MAX_S

STRATEGY_ORDER = ("rolling", "blue-green", "canary")  # from the laxest to the strictest


def rising_to_100(steps: list[int]) -> list[int]:
    """``steps`` when they are a canary plan: rising percentages of traffic between 1 and 100, ending at 100."""
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
        raise ValueError(f"{steps} is not a canary plan; give rising percentages of traffic "
                         "between 1 and 100 that end at 100, e.g. [10, 50, 100]")
    return steps


class RiskPath(StrictModel):
    """The path of one risk level. A field left out keeps the environment's (or deployment's) own value;
    ``approval: true`` asks for an approval even where the environment does not."""

    strategy: str | None = None
    canary_steps: list[int] | None = None
    watch: Duration | None = None
    approval: bool = False

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str | None) -> str | None:
        if value is not None and value not in STRATEGY_ORDER:
            raise ValueError(f"`{value}` is not a strategy{did_you_mean(value, STRATEGY_ORDER)}; use "
                             "rolling, blue-green or canary (or leave it out for the environment's own)")
        return value

    @field_validator("canary_steps")
    @classmethod
    def _a_canary_plan(cls, steps: list[int] | None) -> list[int] | None:
        return None if steps is None else rising_to_100(steps)

    @field_validator("watch")
    @classmethod
    def _as_long_as_a_watch_may_last(cls, value: float | None) -> float | None:
        if value is not None and value > WATCH_MAX_S:
            raise ValueError(f"a watch of {value:g}s is longer than the {WATCH_MAX_S}s a watch may last; "
                             f"give at most {WATCH_MAX_S // 3600}h")
        return value

    @model_validator(mode="after")
    def _steps_need_a_canary(self) -> RiskPath:
        if self.canary_steps is not None and self.strategy != "canary":
            raise ValueError(f"canary_steps act only with `strategy: canary` (this level's strategy is "
                             f"{self.strategy or 'the environment’s own'}); add `strategy: canary` or remove "
                             "canary_steps")
        return self


def _low() -> RiskPath:
    return RiskPath(strategy="blue-green", watch=120.0)


def _high() -> RiskPath:
    return RiskPath(strategy="canary", canary_steps=[5, 25, 50, 100], watch=900.0, approval=True)


class RiskPolicy(StrictModel):
    """The path of each risk level (a level written here replaces that level's default whole), and what a
    change of documentation only does: ``skip`` (nothing is built or deployed) or ``deploy`` (the low path)."""

    docs_only: Literal["skip", "deploy"] = "skip"
    low: RiskPath = Field(default_factory=_low)
    medium: RiskPath = Field(default_factory=RiskPath)
    high: RiskPath = Field(default_factory=_high)

    def path(self, level: str) -> RiskPath:
        """The path of ``level`` (low, medium or high)."""
        if level not in ("low", "medium", "high"):
            raise ValueError(f"`{level}` is not a risk level; use low, medium or high")
        path: RiskPath = getattr(self, level)
        return path
