"""The error tree.

:class:`OrchestraError` and its children are expected failures a user can act
on: their message (and hint) is shown in Slack, the PR comment or the terminal.
Anything else is a bug: logged with its traceback, reported generically.
"""
from __future__ import annotations

import time


class OrchestraError(Exception):
    """An expected failure with a message meant for the user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotFound(OrchestraError):
    """A run, service or environment that does not exist."""


class ConfigError(OrchestraError):
    """The configuration file is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the configuration:\n" + "\n".join(problems),
                         hint="fix them and run `orchestra validate`")
        self.problems = problems


class PolicyDenied(OrchestraError):
    """The requester may not do this here."""


class LockHeld(OrchestraError):
    """Another run holds the deploy lock of a service and environment."""

    def __init__(self, owner: str, run_id: str, service: str, env: str, expires_at: float) -> None:
        left = max(0, int(expires_at - time.time()))
        super().__init__(f"{service} in {env} is being deployed by {owner} (run {run_id})",
                         hint=f"wait for it to finish, or for the lock to expire in {left}s")
        self.owner = owner
        self.run_id = run_id


class StageFailed(OrchestraError):
    """A stage ran and its gate said no (lint errors, failing tests, unhealthy deploy)."""
