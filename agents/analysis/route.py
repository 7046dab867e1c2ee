"""The path a change takes, decided from its risk: the strategy, the canary steps, the watch after the
release, whether an approval is asked for, or nothing to build at all.

:func:`decide` is pure: the risk (level, categories, reasons), the trusted `risk:` policy, the environment's
own path and what the requester asked for go in; a :class:`Route` with every reason comes out. A level's
fields replace the environment's (a field it leaves out keeps the environment's); an approval is asked for
when the environment or the level wants one. The requester may ask for a stricter strategy than that
(rolling < blue-green < canary), never a laxer one: the policy's stays, and the route says why.
:func:`record` runs it once the analyze stage has classified a deploy run's change: it keeps the chosen
values on the run (the deploy stage, the observe stage's watch and the router's approval read them there)
and publishes ``route_decided`` with its inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agents.analysis.risk import Category, Risk
from orchestra.config.risk_policy import STRATEGY_ORDER, RiskPolicy
from orchestra.errors import StageFailed
from orchestra.events import EventType
from orchestra.limits import canary_problem
from orchestra.store import RunStore

if TYPE_CHECKING:
    from agents.context import AgentContext

NOTHING_TO_DO = "docs-only change: nothing built or deployed"


@dataclass(frozen=True)
class DeployPath:
    """How a release goes out: strategy, canary steps (only for canary), watch after it, approval first."""

    strategy: str
    canary_steps: tuple[int, ...] = ()
    watch_s: float = 300.0
    approval: bool = False

    def describe(self) -> str:
        steps = f" {'→'.join(f'{s}%' for s in self.canary_steps)}" if self.strategy == "canary" else ""
        return f"{self.strategy}{steps}, watch {duration(self.watch_s)}" + (", approval first" if self.approval else "")


@dataclass(frozen=True)
class Route:
    """The decision and its inputs. ``chosen`` None: nothing is built or deployed (``nothing`` says why)."""

    level: str
    reasons: list[str]
    categories: list[str]
    policy: dict[str, Any]  # the level's path in the `risk:` policy (or docs_only), as written
    requested: str | None
    default: DeployPath  # the environment's own path
    chosen: DeployPath | None
    why: list[str] = field(default_factory=list)
    approval_reason: str | None = None  # set when the risk policy asks for an approval the environment does not
    nothing: str | None = None

    def summary(self) -> str:
        head = self.nothing if self.chosen is None else self.chosen.describe()
        return f"{head}: {'; '.join(self.why)}"

    def event_data(self) -> dict[str, Any]:
        """The ``route_decided`` event's data: the inputs, the choice and why."""
        chosen = self.chosen
        return {"risk": self.level, "reasons": self.reasons, "categories": self.categories,
                "policy": self.policy, "requested": self.requested, "default": _path_data(self.default),
                "chosen": _path_data(chosen) if chosen else None, "nothing_to_do": self.nothing,
                "why": self.why, "summary": self.summary()}


def decide(risk: Risk, policy: RiskPolicy, default: DeployPath, *, requested: str | None = None) -> Route:
    """The path of a change of ``risk`` under ``policy``, from the environment's ``default`` path and the
    requester's ``requested`` strategy (None: not asked)."""
    level = risk.level.value
    inputs = Route(level, list(risk.reasons), sorted(risk.categories), {}, requested, default, None)
    if set(risk.categories) == {Category.DOCS.value} and policy.docs_only == "skip":
        return replace(inputs, policy={"docs_only": "skip"}, nothing=NOTHING_TO_DO,
                       why=["only documentation changed (risk.docs_only: skip)"])
    path = policy.path(level)
    written = path.model_dump(exclude_defaults=True)
    why: list[str] = []
    if path.strategy:
        strategy = path.strategy
        why.append(f"{level} risk goes {strategy} (risk.{level})")
    else:
        strategy = default.strategy
        why.append(f"{level} risk keeps the environment's {strategy}")
    source = f"risk.{level}.strategy" if path.strategy else "the environment's strategy"
    strategy = _with_request(strategy, requested, source=source, level=level, why=why)
    own = path.canary_steps if path.strategy == strategy == "canary" else None  # the level's own canary
    steps = tuple(own) if own else default.canary_steps
    watch = default.watch_s if path.watch is None else path.watch
    approval_reason = None
    if path.approval and not default.approval:
        approval_reason = (f"{level} risk ({'; '.join(risk.reasons) or 'no reason given'}) asks for an approval "
                           f"(risk.{level}.approval)")
        why.append(f"an approval first, though the environment does not require one (risk.{level}.approval)")
    chosen = DeployPath(strategy, steps if strategy == "canary" else (), watch, default.approval or path.approval)
    why.insert(0, "; ".join(risk.reasons) or "no reason given")
    return replace(inputs, policy=written, chosen=chosen, why=why, approval_reason=approval_reason)


def _with_request(strategy: str, requested: str | None, *, source: str, level: str, why: list[str]) -> str:
    """The strategy once the requester's ask is weighed: a stricter one is taken, a laxer one is refused."""
    if requested is None or requested == strategy:
        return strategy
    if requested not in STRATEGY_ORDER:
        why.append(f"`{requested}` was asked for, which is not a strategy: it stays {strategy}")
        return strategy
    if rank(requested) > rank(strategy):
        why.append(f"{requested} as asked (stricter than {strategy})")
        return requested
    why.append(f"{requested} was asked for, but a {level}-risk change goes no laxer than {strategy} "
               f"({source}): it stays {strategy}")
    return strategy


def rank(strategy: str) -> int:
    """How strict a strategy is: rolling 0, blue-green 1, canary 2."""
    return STRATEGY_ORDER.index(strategy)


def record(ctx: AgentContext, risk: Risk) -> Route | None:
    """Decide a deploy run's path and keep it on the run, with its ``route_decided`` event; None for other runs."""
    if ctx.run.kind != "deploy":
        return None
    config, env = ctx.config, ctx.run.env
    default = DeployPath(config.strategy(env), tuple(config.deployment.canary.steps), config.observability.watch,
                         config.environment(env).approval_required)
    route = decide(risk, config.risk, default, requested=ctx.run.requested_strategy)
    chosen = route.chosen
    if chosen is not None and chosen.strategy == "canary":  # the trusted steps at this branch's interval
        problem = canary_problem(len(chosen.canary_steps), config.deployment.canary.analysis_interval)
        if problem is not None:
            raise StageFailed(f"the {route.level}-risk path cannot be deployed: {problem}",
                              hint="shorten deployment.canary.analysis_interval, or ask for fewer canary_steps "
                                   "in the trusted `risk:` policy")
    if chosen is None:
        RunStore(ctx.redis).update(ctx.run.id, nothing_to_do=route.nothing)
    else:
        RunStore(ctx.redis).update(ctx.run.id, strategy=chosen.strategy, canary_steps=list(chosen.canary_steps) or None,
                                   watch_s=chosen.watch_s, risk_approval=route.approval_reason)
    ctx.emit(EventType.ROUTE_DECIDED, **route.event_data())
    return route


def duration(seconds: float) -> str:
    """``15m``, ``90s``, ``1h30m``: a watch as people write it."""
    whole = int(seconds)
    if whole != seconds or whole < 60 or whole % 60:
        return f"{seconds:g}s"
    hours, minutes = divmod(whole // 60, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or not hours else "")


def _path_data(path: DeployPath) -> dict[str, Any]:
    return {"strategy": path.strategy, "canary_steps": list(path.canary_steps), "watch_s": path.watch_s,
            "approval": path.approval}
