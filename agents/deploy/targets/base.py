"""The one interface every deploy target implements, and the values that cross it.

The deploy stage, rollback, the strategies and the observe stage talk only to a :class:`DeployTarget`:
deploy a version (health-checked before traffic moves), undo a finished deploy of a group, roll back,
stop what the keep window no longer needs, read what is live, read a release's logs, and say where
the judge finds its metrics. Which implementation serves a service is its ``runtime``
(:mod:`agents.deploy.targets.registry`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agents.deploy.targets.state import LiveState, Release

if TYPE_CHECKING:
    from agents.deploy.strategies import Judge

Report = Callable[[str, dict[str, Any]], None]  # ("triggered" | "progress", data)


@dataclass
class Plan:
    """One service's deploy: what to run, where, and how traffic moves."""

    service: str
    env: str
    image: str
    version: str
    run_id: str
    ref: str | None = None  # the branch or tag asked for, recorded on the release beside its version
    health: str = "/health"
    port_hint: int | None = None  # the configured port: the edge listens there when it is free
    extra_env: dict[str, str] = field(default_factory=dict)
    strategy: str = "blue-green"
    steps: list[int] = field(default_factory=lambda: [10, 50, 100])
    pause_s: float = 60.0
    keep_s: float = 3600.0
    replicas: int = 1
    metrics_path: str = "/metrics"
    # secrets.keys -> value, resolved before anything moves (agents/deploy/targets/secrets.py); each target
    # hands them to the application its own way and never writes them into events or logs
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class DeployOutcome:
    """What a deploy changed, enough to undo it."""

    before: LiveState | None
    after: LiveState
    changed: bool
    timings: dict[str, float] = field(default_factory=dict)
    verdicts: list[dict[str, object]] = field(default_factory=list)


class TrafficSplit(Protocol):
    """Moves traffic between two releases of one service (an nginx edge, a Service selector, an HTTPRoute)."""

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        """Put ``weight`` percent on ``new``, the rest on ``old``; returns the split as applied
        (version -> percent), which may differ when the platform can only approximate it."""
        ...


class Health(Protocol):
    """Tells whether a release is ready to serve."""

    def wait_healthy(self, release: Release, health: str, timeout: float = ...) -> float:
        """Seconds until ``release`` was ready; StageFailed (with its logs) when it never became ready."""
        ...


class DeployTarget(Health, Protocol):
    """Deploy, undo, roll back and describe services on one platform. Knows nothing about runs,
    locks or events (the deploy agent does)."""

    runtime: str
    restartable: bool  # whether restart() can restart this platform's releases

    def deploy(self, plan: Plan, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """Start the new release, wait until it is ready, then move traffic with the plan's strategy."""
        ...

    def restore(self, outcome: DeployOutcome, health: str) -> None:
        """Undo a finished deploy of a group whose later member failed."""
        ...

    def rollback(self, service: str, env: str, *, to_version: str | None, health: str, keep_s: float,
                 run_id: str) -> tuple[LiveState, bool]:
        """All traffic back on ``to_version`` (default: the previous release); (state, changed?)."""
        ...

    def restart(self, state: LiveState, release: Release, health: str) -> str:
        """Restart the running instances of the live ``release`` and wait until it serves again; what
        was done. NotFound when its instance is gone; StageFailed when it did not come back."""
        ...

    def reap(self, now: float | None = None) -> list[str]:
        """Wind down previous releases whose keep window is over; returns what was wound down."""
        ...

    def live(self, service: str, env: str) -> LiveState | None:
        """What serves ``service`` in ``env`` now, as recorded after the last traffic change."""
        ...

    def logs(self, release: Release, lines: int = 50) -> str:
        """The last ``lines`` of the release's output (crash logs)."""
        ...

    def scrape_address(self, release: Release) -> str | None:
        """Where Prometheus scrapes ``release`` when we must list it ourselves (file_sd), or None when
        the platform's own service discovery finds it by its labels."""
        ...

    def close(self) -> None:
        """Release the target's connections."""
        ...


def where(state: LiveState) -> str:
    """One phrase for where a service runs: ``local (http://127.0.0.1:8080)`` or
    ``kubernetes prod-cluster/shop``."""
    if state.runtime == "docker":
        return f"local ({state.url})"
    return f"{state.runtime} {state.location or ''}".strip()
