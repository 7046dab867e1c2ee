"""The trusted policy: the gate of each environment and the identities, from a source the deploy cannot change.

A branch may change how it is built and deployed; it may not change who may deploy or approve it, whether
it needs an approval, when deploys are frozen, or the path each risk level takes (``risk:``, read whole from
the trusted source: a branch could otherwise drop the approval its own risky change forces).
:class:`TrustedPolicy` holds those fields as read from
the served repository's default branch (or the operator's policy file); :meth:`TrustedPolicy.govern`
puts them over a branch's configuration and :meth:`TrustedPolicy.differences` says what the branch tried.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from pydantic import Field, ValidationError

from orchestra.config.environments import EnvironmentPolicy, Environments, StrictModel
from orchestra.config.identities import Identities
from orchestra.config.loader import _Loader
from orchestra.config.model import ProjectConfig
from orchestra.config.problems import duplicate_keys, expand, field_path, line_of
from orchestra.config.risk_policy import RiskPolicy
from orchestra.errors import ConfigError

# The gate: what the trusted source decides. Everything else (strategy, cluster, demo traffic) is a deploy
# parameter the branch may set.
GATE_FIELDS = ("branches", "approval_required", "approvers", "deployers", "allow_self_approval",
               "approval_timeout", "freeze")
POLICY_SECTIONS = ("environments", "identities", "risk")


class PolicyFile(StrictModel):
    """A central policy file (ORCHESTRA_POLICY_FILE): the policy sections of devops_orchestra.yaml only."""

    environments: Environments = Field(default_factory=lambda: Environments.model_validate({}))
    identities: Identities = Field(default_factory=Identities)
    risk: RiskPolicy = Field(default_factory=RiskPolicy)


@dataclass(frozen=True)
class TrustedPolicy:
    """The environments' gates, the identities and the risk paths, and where they were read (for people to see)."""

    environments: Environments
    identities: Identities
    source: str
    risk: RiskPolicy = field(default_factory=RiskPolicy)

    @classmethod
    def of(cls, config: ProjectConfig | PolicyFile, source: str) -> TrustedPolicy:
        return cls(config.environments, config.identities, source, config.risk)

    def environment(self, name: str) -> EnvironmentPolicy:
        return self.environments.get(name)

    def govern(self, config: ProjectConfig) -> ProjectConfig:
        """``config`` with every environment's gate, the identities and the risk paths replaced by the trusted ones."""
        envs = {name: config.environment(name).model_copy(update={f: getattr(self.environment(name), f)
                                                                   for f in GATE_FIELDS})
                for name in self.environments.names()}
        return config.model_copy(update={"environments": Environments.model_construct(None, **envs),
                                         "identities": self.identities, "risk": self.risk})

    def differences(self, config: ProjectConfig) -> list[str]:
        """How the policy sections ``config``'s file gives differ from the trusted ones (none if it gives none)."""
        found = []
        if "environments" in config.model_fields_set:
            for name in self.environments.names():
                mine, trusted = config.environment(name), self.environment(name)
                for field in GATE_FIELDS:
                    here, there = _shown(getattr(mine, field)), _shown(getattr(trusted, field))
                    if here != there:
                        found.append(f"`{name}.{field}` is {here} here, {there} in the trusted policy")
        if "identities" in config.model_fields_set and config.identities != self.identities:
            found.append("`identities` differ from the trusted policy's")
        if "risk" in config.model_fields_set and config.risk != self.risk:
            found.append("`risk` differs from the trusted policy's")
        return found


def parse_policy(text: str, *, filename: str, whole_file: bool = True) -> PolicyFile:
    """A policy file's text; raises ConfigError with `FILE:LINE: field: problem` lines.

    ``whole_file`` False reads only the policy sections of a devops_orchestra.yaml (its other sections
    are the run's to validate). The same text is parsed once: every stage and decision reads the policy.
    """
    return _parse_policy(text, filename, whole_file).model_copy(deep=True)


@lru_cache(maxsize=64)
def _parse_policy(text: str, filename: str, whole_file: bool) -> PolicyFile:
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader) if root is not None else {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{filename}:1: yaml: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{filename}:1: (top level): must be a mapping with `environments` and `identities`"])
    if not whole_file:
        data = {key: value for key, value in data.items() if key in POLICY_SECTIONS}
    problems = [f"{filename}:{line}: {field_path(loc)}: {msg}" for loc, line, msg in duplicate_keys(root)
                if whole_file or str(loc[0]) in POLICY_SECTIONS]
    try:
        policy = PolicyFile.model_validate(data)
    except ValidationError as exc:
        errors: list[Any] = list(exc.errors())
        for loc, msg in expand(errors):
            if len(loc) == 1 and str(loc[0]) not in POLICY_SECTIONS:
                msg = "is not policy; a policy file holds only `environments`, `identities` and `risk`"
            problems.append(f"{filename}:{line_of(root, loc)}: {field_path(loc)}: {msg}")
    if problems:
        raise ConfigError(problems)
    return policy


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s"
    if isinstance(value, list):
        return "[" + ", ".join(w.describe() if hasattr(w, "describe") else str(w) for w in value) + "]"
    return str(value)
