"""Per-environment policy: push-to-deploy branches, approvals, who may deploy, freeze windows."""
from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestra.config.demo_traffic import DemoTraffic
from orchestra.config.types import Duration, Ec2Fleet, EcsCluster, KubernetesCluster, LambdaFunction, did_you_mean
from orchestra.errors import NotFound
from orchestra.intents import ENVIRONMENTS

Strategy = Literal["blue-green", "canary", "rolling"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ENV_ALIASES = {"prod": "production", "stg": "staging", "stage": "staging", "dev": "development",
               "develop": "development"}
# What an environment is when the file says nothing about it.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "production": {"branches": ["main"], "approval_required": True},
    "staging": {"branches": ["staging"], "approval_required": False},
    "development": {"branches": ["develop"], "approval_required": False},
}


class StrictModel(BaseModel):
    """Every section forbids unknown keys, so a typo is an error instead of a silent default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def canonical_env(name: str) -> str:
    """``prod`` -> ``production``; raises NotFound (with a suggestion) for unknown names."""
    key = name.strip().lower()
    key = ENV_ALIASES.get(key, key)
    if key not in ENVIRONMENTS:
        raise NotFound(f"unknown environment `{name}`{did_you_mean(key, ENVIRONMENTS)}",
                       hint=f"use one of {', '.join(ENVIRONMENTS)}")
    return key


def _same_person(a: str, b: str) -> bool:
    return a.strip().lstrip("@").lower() == b.strip().lstrip("@").lower()


class FreezeWindow(StrictModel):
    """No deploys during this window: either ``start``/``end`` datetimes, or weekly ``days`` + ``from``/``to``."""

    start: datetime | None = None
    end: datetime | None = None
    days: list[Weekday] = Field(default_factory=list)
    from_: time | None = Field(default=None, alias="from")
    to: time | None = None
    timezone: str = "UTC"
    reason: str = ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone `{value}`; use an IANA name such as UTC or Europe/Paris") \
                from exc
        return value

    @model_validator(mode="after")
    def _one_form(self) -> FreezeWindow:
        absolute = self.start is not None or self.end is not None
        weekly = bool(self.days) or self.from_ is not None or self.to is not None
        if absolute == weekly:
            raise ValueError("a freeze window needs either `start` and `end`, or `days`, `from` and `to`")
        if absolute and (self.start is None or self.end is None or self._aware(self.end) <= self._aware(
                self.start)):
            raise ValueError("a freeze window needs both `start` and `end`, with `end` after `start`")
        if weekly and (not self.days or self.from_ is None or self.to is None or self.from_ == self.to):
            raise ValueError("a weekly freeze window needs `days`, `from` and `to` (e.g. days: [fri], "
                             "from: '16:00', to: '23:59')")
        return self

    def _aware(self, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(self.timezone))

    def active(self, at: datetime | None = None) -> bool:
        """Is ``at`` (default: now) inside this window?"""
        at = at or datetime.now(UTC)
        if self.start is not None and self.end is not None:
            return self._aware(self.start) <= at < self._aware(self.end)
        assert self.from_ is not None and self.to is not None
        local = at.astimezone(ZoneInfo(self.timezone))
        now = local.time().replace(tzinfo=None)
        if self.from_ < self.to:
            return WEEKDAYS[local.weekday()] in self.days and self.from_ <= now < self.to
        # An overnight window (22:00 -> 06:00) belongs to the day it starts on.
        if now >= self.from_:
            return WEEKDAYS[local.weekday()] in self.days
        yesterday = (local - timedelta(days=1)).weekday()
        return now < self.to and WEEKDAYS[yesterday] in self.days

    def describe(self) -> str:
        if self.start is not None and self.end is not None:
            text = f"{self.start.isoformat()} to {self.end.isoformat()}"
        else:
            text = f"{','.join(self.days)} {self.from_:%H:%M}-{self.to:%H:%M} {self.timezone}"
        return f"{text} ({self.reason})" if self.reason else text


class EnvironmentPolicy(StrictModel):
    """Who may deploy to an environment, from which branches, and with what approval."""

    branches: list[str] = Field(default_factory=list)
    approval_required: bool = False
    approvers: list[str] = Field(default_factory=list)
    deployers: list[str] = Field(default_factory=list)
    allow_self_approval: bool = False
    approval_timeout: Duration = 1800.0
    strategy: Strategy | None = None
    freeze: list[FreezeWindow] = Field(default_factory=list)
    demo_traffic: DemoTraffic | None = None  # background requests while a run deploys here
    kubernetes: KubernetesCluster = Field(default_factory=KubernetesCluster)  # for `runtime: kubernetes`
    ecs: EcsCluster | None = None  # for `runtime: ecs`
    ec2: Ec2Fleet | None = None  # for `runtime: ec2`
    lambda_: LambdaFunction | None = Field(default=None, alias="lambda")  # for `runtime: lambda`

    def triggers_on(self, branch: str) -> bool:
        """Does a push to ``branch`` deploy here (glob patterns such as ``release/*``)?"""
        return any(fnmatchcase(branch, pattern) for pattern in self.branches)

    def may_deploy(self, user: str) -> bool:
        """An empty ``deployers`` list lets anyone deploy."""
        return not self.deployers or any(_same_person(user, d) for d in self.deployers)

    def may_approve(self, approver: str, requester: str) -> bool:
        """An approver must be listed (when a list is given) and, unless allowed, not the requester."""
        if self.approvers and not any(_same_person(approver, a) for a in self.approvers):
            return False
        return self.allow_self_approval or not _same_person(approver, requester)

    def frozen(self, at: datetime | None = None) -> FreezeWindow | None:
        """The freeze window in force at ``at`` (default: now), if any."""
        return next((w for w in self.freeze if w.active(at)), None)


class Environments(StrictModel):
    """The three environments; aliases (prod, stg, dev) are accepted as keys."""

    production: EnvironmentPolicy
    staging: EnvironmentPolicy
    development: EnvironmentPolicy

    @model_validator(mode="before")
    @classmethod
    def _canonical_with_defaults(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return data
        merged: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, value in data.items():
            name = ENV_ALIASES.get(str(key).lower(), str(key))
            if name in merged:
                raise ValueError(f"`{given[name]}` and `{key}` name the same environment; keep one")
            merged[name], given[name] = value, str(key)
        for name, defaults in ENV_DEFAULTS.items():
            value = merged.get(name)
            if value is None:
                merged[name] = dict(defaults)
            elif isinstance(value, dict):
                merged[name] = {**defaults, **value}
        return merged

    def get(self, name: str) -> EnvironmentPolicy:
        policy: EnvironmentPolicy = getattr(self, canonical_env(name))
        return policy

    def names(self) -> list[str]:
        return list(ENVIRONMENTS)
