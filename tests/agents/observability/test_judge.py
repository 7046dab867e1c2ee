"""The canary judge, as tables of samples and expected verdicts."""
from __future__ import annotations

import random

import pytest

from agents.observability.judge import MetricSpec, Verdict, compare, format_value, judge_metric


def _noisy(center: float, spread: float, n: int = 20, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0, center + rng.uniform(-spread, spread)) for _ in range(n)]


ERRORS = MetricSpec("error_rate", tolerance=0.5, floor=0.01, threshold=0.2)
LATENCY = MetricSpec("latency_p99", tolerance=0.2, floor=0.005)
GROWTH = MetricSpec("memory_growth", tolerance=0.5, floor=20_000)


@pytest.mark.parametrize(("spec", "canary", "baseline", "expected"), [
    # same behaviour: pass
    (ERRORS, _noisy(0.01, 0.01, seed=1), _noisy(0.01, 0.01, seed=2), Verdict.PASS),
    (LATENCY, _noisy(0.100, 0.01, seed=3), _noisy(0.100, 0.01, seed=4), Verdict.PASS),
    # +5 points of errors: fail
    (ERRORS, _noisy(0.06, 0.01, seed=5), _noisy(0.01, 0.01, seed=6), Verdict.FAIL),
    # +50% p99 latency: fail
    (LATENCY, _noisy(0.150, 0.01, seed=7), _noisy(0.100, 0.01, seed=8), Verdict.FAIL),
    # +10% latency, significant but within the 20% tolerance: pass
    (LATENCY, _noisy(0.110, 0.002, seed=9), _noisy(0.100, 0.002, seed=10), Verdict.PASS),
    # +0.5 point of errors from a zero baseline: inside the one-point floor: pass
    (ERRORS, _noisy(0.005, 0.001, seed=11), [0.0] * 20, Verdict.PASS),
    # a canary that is better: pass
    (LATENCY, _noisy(0.050, 0.01, seed=12), _noisy(0.100, 0.01, seed=13), Verdict.PASS),
    # memory growing at 200 KB/s against a flat baseline: fail
    (GROWTH, _noisy(200_000, 50_000, seed=14), _noisy(0, 5_000, seed=15), Verdict.FAIL),
    # above the absolute threshold, even when the baseline is as bad: fail
    (ERRORS, _noisy(0.3, 0.01, seed=16), _noisy(0.3, 0.01, seed=17), Verdict.FAIL),
    # too few canary samples: inconclusive
    (LATENCY, [0.5, 0.6], _noisy(0.1, 0.01), Verdict.INCONCLUSIVE),
    # no baseline to compare with: inconclusive
    (LATENCY, _noisy(0.1, 0.01), [], Verdict.INCONCLUSIVE),
    # identical constant samples: pass (p = 1)
    (ERRORS, [0.0] * 10, [0.0] * 10, Verdict.PASS),
    # NaN samples (0/0 rates) are dropped, not counted
    (ERRORS, [float("nan")] * 10 + [0.0] * 3, [0.0] * 10, Verdict.INCONCLUSIVE),
])
def test_metric_verdicts(spec: MetricSpec, canary: list[float], baseline: list[float],
                         expected: Verdict) -> None:
    result = judge_metric(spec, canary, baseline)
    assert result.verdict == expected, result.reason


def test_fail_reports_the_numbers_behind_it() -> None:
    result = judge_metric(ERRORS, _noisy(0.06, 0.01, seed=5), _noisy(0.01, 0.01, seed=6))
    assert result.canary == pytest.approx(0.06, abs=0.01)
    assert result.baseline == pytest.approx(0.01, abs=0.01)
    assert result.p_value is not None and result.p_value < 0.001
    assert result.allowed == pytest.approx(0.01)
    assert result.samples == (20, 20)
    assert "6." in result.reason and "%" in result.reason


@pytest.mark.parametrize(("canary_requests", "canary_errors", "expected"), [
    (500, 0.01, Verdict.PASS),
    (10, 0.01, Verdict.INCONCLUSIVE),  # not enough traffic is never a pass
    (10, 0.30, Verdict.FAIL),  # but a clear breach fails even on little traffic
    (None, 0.01, Verdict.PASS),
])
def test_step_verdict_and_traffic(canary_requests: float | None, canary_errors: float,
                                  expected: Verdict) -> None:
    canary = {"error_rate": _noisy(canary_errors, 0.005, seed=20), "latency_p99": _noisy(0.1, 0.01, seed=21)}
    baseline = {"error_rate": _noisy(0.01, 0.005, seed=22), "latency_p99": _noisy(0.1, 0.01, seed=23)}
    result = compare(canary, baseline, [ERRORS, LATENCY], canary_requests=canary_requests, min_requests=50)
    assert result.verdict == expected, result.reason
    if expected == Verdict.INCONCLUSIVE:
        assert "not enough traffic" in result.reason


def test_culprit_is_the_metric_furthest_past_its_limit() -> None:
    canary = {"error_rate": _noisy(0.04, 0.005), "latency_p99": _noisy(0.5, 0.01)}
    baseline = {"error_rate": _noisy(0.01, 0.005, seed=3), "latency_p99": _noisy(0.1, 0.01, seed=4)}
    result = compare(canary, baseline, [ERRORS, LATENCY], canary_requests=1000)
    assert result.verdict == Verdict.FAIL
    assert result.culprit is not None and result.culprit.metric == "latency_p99"
    assert result.to_dict()["metrics"][1]["verdict"] == "fail"


def test_optional_metric_without_data_does_not_block_a_pass() -> None:
    optional = MetricSpec("cpu", required=False)
    result = compare({"latency_p99": _noisy(0.1, 0.01)}, {"latency_p99": _noisy(0.1, 0.01, seed=9)},
                     [LATENCY, optional], canary_requests=1000)
    assert result.verdict == Verdict.PASS
    required = compare({"latency_p99": _noisy(0.1, 0.01)}, {"latency_p99": _noisy(0.1, 0.01, seed=9)},
                       [LATENCY, MetricSpec("cpu")], canary_requests=1000)
    assert required.verdict == Verdict.INCONCLUSIVE


@pytest.mark.parametrize(("metric", "value", "text"), [
    ("error_rate", 0.0523, "5.23%"), ("latency_p99", 0.6124, "612 ms"), ("cpu", 91.25, "91.2%"),
    ("memory", 123_400_000, "123.4 MB"), ("memory_growth", 35_200, "35.2 KB/s"),
])
def test_format_value(metric: str, value: float, text: str) -> None:
    assert format_value(metric, value) == text
