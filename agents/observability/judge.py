"""The statistics of canary analysis: canary against baseline, metric by metric, in the manner of Kayenta.

Pure: samples in, a verdict with the numbers behind it out. For each metric a
one-sided Mann-Whitney U test asks "is the canary worse?"; a significant
difference only fails the canary when it is also larger than the metric's
tolerance (relative to the baseline, with an absolute floor). Absolute
thresholds from the configuration fail the canary whatever the baseline does.
Too little traffic or too few samples is inconclusive, never a pass.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

DEFAULT_ALPHA = 0.05


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is judged. Higher values are worse for every metric we judge."""

    name: str
    tolerance: float = 0.2  # relative worsening allowed (0.2 = 20% above the baseline)
    floor: float = 0.0  # absolute worsening always allowed (noise floor, in the metric's unit)
    threshold: float | None = None  # absolute limit on the canary's mean
    min_samples: int = 5
    required: bool = True  # without data, a required metric makes the verdict inconclusive


@dataclass(frozen=True)
class MetricResult:
    """The judgement of one metric and the numbers behind it."""

    metric: str
    verdict: Verdict
    reason: str
    canary: float | None = None  # mean over the window
    baseline: float | None = None
    threshold: float | None = None
    allowed: float | None = None  # the largest worsening tolerated
    p_value: float | None = None
    u_statistic: float | None = None
    samples: tuple[int, int] = (0, 0)  # (canary, baseline)
    required: bool = True

    @property
    def excess(self) -> float:
        """How far past its limit a failing metric is, relative to the limit (for ranking)."""
        if self.canary is None:
            return 0.0
        if self.threshold is not None and self.canary > self.threshold:
            return (self.canary - self.threshold) / max(abs(self.threshold), 1e-12)
        if self.baseline is not None and self.allowed is not None:
            return (self.canary - self.baseline - self.allowed) / max(abs(self.allowed), 1e-12)
        return 0.0


@dataclass(frozen=True)
class Judgement:
    """The verdict of a whole step, with every metric's result."""

    verdict: Verdict
    reason: str
    metrics: list[MetricResult] = field(default_factory=list)
    canary_requests: float | None = None
    baseline_requests: float | None = None

    @property
    def culprit(self) -> MetricResult | None:
        """The failing metric furthest past its limit, if any."""
        failing = [m for m in self.metrics if m.verdict == Verdict.FAIL]
        return max(failing, key=lambda m: m.excess) if failing else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for events."""
        return {"verdict": self.verdict.value, "reason": self.reason,
                "canary_requests": self.canary_requests, "baseline_requests": self.baseline_requests,
                "metrics": [{**asdict(m), "verdict": m.verdict.value, "samples": list(m.samples)}
                            for m in self.metrics]}


def compare(canary: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]],
            specs: Iterable[MetricSpec], *, canary_requests: float | None = None,
            baseline_requests: float | None = None, min_requests: float = 50,
            alpha: float = DEFAULT_ALPHA) -> Judgement:
    """Compare a canary step's samples with the baseline's. ``canary_requests`` is the traffic the
    canary served in the window."""
    results = [judge_metric(s, canary.get(s.name, ()), baseline.get(s.name, ()), alpha=alpha)
               for s in specs]
    verdict, reason = _overall(results, canary_requests, min_requests)
    return Judgement(verdict, reason, results, canary_requests, baseline_requests)


def judge_metric(spec: MetricSpec, canary: Sequence[float], baseline: Sequence[float], *,
                 alpha: float = DEFAULT_ALPHA) -> MetricResult:
    """One metric: absolute threshold first, then the statistical comparison."""
    c, b = _clean(canary), _clean(baseline)
    base = MetricResult(spec.name, Verdict.INCONCLUSIVE, "", threshold=spec.threshold,
                        samples=(len(c), len(b)), required=spec.required)
    if len(c) < spec.min_samples:
        return replace(base, reason=f"{len(c)} canary samples, need {spec.min_samples}")
    c_mean = _mean(c)
    if spec.threshold is not None and c_mean > spec.threshold:
        return replace(base, verdict=Verdict.FAIL, canary=c_mean, baseline=_mean(b) if b else None,
                       reason=f"{format_value(spec.name, c_mean)} is above the threshold "
                              f"{format_value(spec.name, spec.threshold)}")
    if len(b) < spec.min_samples:
        return replace(base, canary=c_mean, reason=f"{len(b)} baseline samples, need {spec.min_samples}")
    return _compare(spec, c, b, alpha, base)


def _compare(spec: MetricSpec, c: list[float], b: list[float], alpha: float,
             base: MetricResult) -> MetricResult:
    c_mean, b_mean = _mean(c), _mean(b)
    allowed = max(spec.tolerance * abs(b_mean), spec.floor)
    u, p = _mann_whitney(c, b)
    numbers = replace(base, canary=c_mean, baseline=b_mean, allowed=allowed, p_value=p, u_statistic=u)
    versus = f"canary {format_value(spec.name, c_mean)} vs baseline {format_value(spec.name, b_mean)}"
    if p < alpha and c_mean - b_mean > allowed:
        return replace(numbers, verdict=Verdict.FAIL,
                       reason=f"{versus}: worse by more than {format_value(spec.name, allowed)} (p={p:.3g})")
    why = "no significant difference" if p >= alpha else "difference within tolerance"
    return replace(numbers, verdict=Verdict.PASS, reason=f"{versus}: {why} (p={p:.3g})")


def _overall(results: list[MetricResult], canary_requests: float | None,
             min_requests: float) -> tuple[Verdict, str]:
    failing = [r for r in results if r.verdict == Verdict.FAIL]
    if failing:
        worst = max(failing, key=lambda r: r.excess)
        return Verdict.FAIL, f"{worst.metric}: {worst.reason}"
    if canary_requests is not None and canary_requests < min_requests:
        return Verdict.INCONCLUSIVE, (f"not enough traffic: the canary served {canary_requests:.0f} "
                                      f"requests, need {min_requests:.0f}")
    unsure = [r for r in results if r.verdict == Verdict.INCONCLUSIVE and r.required]
    if unsure:
        return Verdict.INCONCLUSIVE, "; ".join(f"{r.metric}: {r.reason}" for r in unsure)
    if not any(r.verdict == Verdict.PASS for r in results):
        return Verdict.INCONCLUSIVE, "no metric had enough data"
    return Verdict.PASS, "every metric within tolerance"


def _mann_whitney(c: list[float], b: list[float]) -> tuple[float, float]:
    """One-sided U test, canary greater than baseline; identical samples give p=1."""
    if len(set(c) | set(b)) == 1:
        return len(c) * len(b) / 2, 1.0
    from scipy.stats import mannwhitneyu  # slow to import: only when a comparison is due

    result = mannwhitneyu(c, b, alternative="greater")
    return float(result.statistic), float(result.pvalue)


def _clean(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


_UNITS: dict[str, tuple[float, str, str]] = {
    # metric: (scale, format, unit)
    "error_rate": (100.0, "{:.2f}", "%"),
    "cpu": (1.0, "{:.1f}", "%"),
    "memory": (1 / 1e6, "{:.1f}", " MB"),
    "memory_growth": (1 / 1e3, "{:.1f}", " KB/s"),
    "request_rate": (1.0, "{:.1f}", " req/s"),
}


def format_value(metric: str, value: float) -> str:
    """A metric value in the unit people read it in: 5.20%, 612 ms, 35.2 KB/s."""
    if metric.startswith("latency"):
        return f"{value * 1000:.0f} ms"
    scale, fmt, unit = _UNITS.get(metric, (1.0, "{:.3g}", ""))
    return fmt.format(value * scale) + unit
