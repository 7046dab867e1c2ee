"""What the observe stage judges and how strictly, from the config's `rollback` and `observability`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.observability.judge import MetricSpec

if TYPE_CHECKING:
    from agents.context import AgentContext
    from orchestra.config import ProjectConfig

# A steady growth above this (bytes/s, ~230 MB an hour) is a leak, whatever the baseline does.
LEAK_BYTES_PER_S = 64_000.0


@dataclass(frozen=True)
class Policy:
    """Thresholds, tolerances and timings of canary analysis and of the watch after a release."""

    specs: tuple[MetricSpec, ...]
    window_s: float = 60.0  # canary analysis window per step (canary.analysis_interval)
    max_wait_s: float = 120.0  # extra time a step may wait for enough traffic
    watch_s: float = 300.0  # watch after a full release (observability.watch)
    breach_s: float = 300.0  # a threshold must stay exceeded this long (rollback.threshold.duration)
    max_rollbacks_per_hour: int = 3
    min_requests: float = 50  # canary requests a step needs before it can pass
    rate_window: str = "5s"
    poll_s: float = 2.0
    enabled: bool = True  # rollback.enabled: automatic rollbacks at all
    alerts: dict[str, float] = field(default_factory=dict)  # metric -> alert threshold

    @property
    def rate_window_s(self) -> float:
        match = re.fullmatch(r"(\d+)([smh])", self.rate_window)
        if match is None:
            raise ValueError(f"rate window {self.rate_window!r} must look like 5s, 1m or 1h")
        return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]

    def limits(self) -> dict[str, float]:
        """Absolute limits checked after a full release: the thresholds plus the leak rate."""
        out = {s.name: s.threshold for s in self.specs if s.threshold is not None}
        out.setdefault("memory_growth", LEAK_BYTES_PER_S)
        return out


def default_specs(*, error_rate: float | None = 0.05, latency_s: float | None = 1.0,
                  cpu: float | None = 90.0, memory_bytes: float | None = None) -> tuple[MetricSpec, ...]:
    """The judged metrics: errors and p99 latency (required), CPU and memory (when exported)."""
    specs = [
        MetricSpec("error_rate", tolerance=0.5, floor=0.01, threshold=error_rate),
        MetricSpec("latency_p99", tolerance=0.3, floor=0.008, threshold=latency_s),
        MetricSpec("cpu", tolerance=0.5, floor=10.0, threshold=cpu, required=False),
        MetricSpec("memory_growth", tolerance=1.0, floor=LEAK_BYTES_PER_S, required=False),
    ]
    if memory_bytes is not None:
        specs.append(MetricSpec("memory", tolerance=1.0, floor=50e6, threshold=memory_bytes, required=False))
    return tuple(specs)


def policy_from_config(config: ProjectConfig, **overrides: object) -> Policy:
    """The policy a project's devops_orchestra.yaml asks for (``overrides`` for tests and benches)."""
    rb = config.rollback
    t = rb.threshold
    specs = default_specs(error_rate=t.error_rate / 100,
                          latency_s=t.latency_ms / 1000 if t.latency_ms else None,
                          cpu=t.cpu, memory_bytes=t.memory_mb * 1e6 if t.memory_mb else None)
    values: dict[str, object] = {
        "specs": specs, "window_s": config.deployment.canary.analysis_interval,
        "max_wait_s": 2 * config.deployment.canary.analysis_interval,
        "watch_s": config.observability.watch, "breach_s": t.duration,
        "max_rollbacks_per_hour": rb.max_automatic_per_hour, "enabled": rb.enabled,
        "alerts": alert_thresholds(config),
    }
    values.update(overrides)
    return Policy(**values)  # type: ignore[arg-type]


def policy_for(ctx: AgentContext) -> Policy:
    """The policy of the run's project, with the watch the risk route chose for the run (if it chose one)."""
    watch = {} if ctx.run.watch_s is None else {"watch_s": ctx.run.watch_s}
    return policy_from_config(ctx.config, **watch)


def alert_thresholds(config: ProjectConfig) -> dict[str, float]:
    """observability.alerts as metric -> threshold in the judge's units."""
    out: dict[str, float] = {}
    for alert in config.observability.alerts:
        if alert.type == "latency" and alert.threshold_ms:
            out["latency_p99"] = alert.threshold_ms / 1000
        elif alert.type == "error_rate" and alert.threshold is not None:
            out["error_rate"] = alert.threshold / 100
        elif alert.type == "cpu" and alert.threshold is not None:
            out["cpu"] = alert.threshold
        elif alert.type == "memory" and alert.threshold_mb:
            out["memory"] = alert.threshold_mb * 1e6
    return out
