"""The Intent: what a person or a webhook asked for, in one typed value.

Every ingress (Slack, GitHub, the CLI) produces an Intent and hands it to
dispatch; nothing downstream knows where it came from except through
``source`` and ``origin``.
"""
from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

# A git ref: branch, tag or sha. No shell metacharacters, no "..", no leading "-".
REF_PATTERN = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/@+-]{1,200}$")
ENVIRONMENTS = ("production", "staging", "development")
STRATEGIES = ("blue-green", "canary", "rolling")


class IntentKind(StrEnum):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    STATUS = "status"
    EXPLAIN = "explain"
    HISTORY = "history"
    CANCEL = "cancel"
    HELP = "help"
    VALIDATE = "validate"  # pre-merge checks of a pull request
    PLAN = "plan"
    UNPIN = "unpin"  # release a pin set by a failed rollback's "Pin" button
    FLAKY = "flaky"  # a service's flaky tests, from the test stage's record
    DRIFT = "drift"  # an environment's infrastructure changed outside Terraform (a refresh-only plan)
    UNKNOWN = "unknown"


class Intent(BaseModel):
    """A request, whatever channel it came through."""

    kind: IntentKind
    service: str | None = None
    services: list[str] = Field(default_factory=list)  # when several were named: all of them, ``service`` first
    ref: str | None = None
    env: str | None = None
    strategy: str | None = None
    no_wait: bool = False  # refuse rather than queue behind a deploy that holds the lock (``--no-wait``)
    text: str = ""
    user: str = "unknown"
    source: str = "cli"  # cli | slack | github
    origin: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ref")
    @classmethod
    def _safe_ref(cls, ref: str | None) -> str | None:
        if ref is not None and not REF_PATTERN.match(ref):
            raise ValueError(f"{ref!r} is not a valid git ref (letters, digits, . _ / @ + - only, no '..')")
        return ref

    @field_validator("env")
    @classmethod
    def _known_env(cls, env: str | None) -> str | None:
        if env is not None and env not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {env!r}; use one of {', '.join(ENVIRONMENTS)}")
        return env

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, strategy: str | None) -> str | None:
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        return strategy

    @model_validator(mode="after")
    def _first_of_several(self) -> Intent:
        if self.services and self.service != self.services[0]:
            raise ValueError(f"service {self.service!r} must be the first of services {self.services!r}")
        return self

    def contract(self) -> dict[str, Any]:
        """The public parse contract: intent, service (several comma-joined), ref, env, strategy."""
        service = ",".join(self.services) if self.services else self.service
        return {"intent": self.kind.value, "service": service, "ref": self.ref,
                "env": self.env, "strategy": self.strategy}
