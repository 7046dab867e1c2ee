"""The canary judge's metric source on ECS: the ALB's CloudWatch metrics of each colour's target group.

For a traffic step, the new colour's target group (canary) is compared with the old one's (baseline)
over the step's window: ``RequestCount`` (too little traffic is inconclusive, never a pass),
``HTTPCode_Target_5XX_Count`` as an error rate, and ``TargetResponseTime`` p99. The canary fails when
its error rate is above ``rollback.threshold.error_rate`` or worse than the baseline's by more than
the tolerance, or when its p99 is above ``rollback.threshold.latency_ms``. A p99 CloudWatch does not
answer is said in the reason and leaves the verdict to the other metrics.

The watch after a full release reads the same samples in its own names and units (:func:`watch_values`),
plus the ECS service's ``CPUUtilization`` (:func:`service_cpu`): agents/observability/sources.py.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.deploy.strategies import Judge, TrafficStep
from agents.deploy.targets.ecs.aws import Aws, AwsError
from agents.deploy.targets.ecs.resources import TargetGroup, colour_of

NAMESPACE = "AWS/ApplicationELB"
MIN_WINDOW_S = 60  # ALB metrics have one-minute resolution
MIN_REQUESTS = 50
TOLERANCE_POINTS = 1.0  # error-rate points the canary may exceed the baseline by


@dataclass(frozen=True)
class Sample:
    requests: float
    errors: float
    p99_s: float | None
    p99_problem: str | None = None

    @property
    def error_rate(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0


def sample(aws: Aws, group: TargetGroup, start: dt.datetime, end: dt.datetime) -> Sample:
    """Requests, 5xx and p99 latency of an ALB target group between ``start`` and ``end``."""
    dims = [{"Name": "TargetGroup", "Value": group.dimension}]
    if group.lb_dimension:
        dims.append({"Name": "LoadBalancer", "Value": group.lb_dimension})
    return sample_of(aws, NAMESPACE, dims, start, end, requests="RequestCount", errors="HTTPCode_Target_5XX_Count",
                     latency="TargetResponseTime", latency_to_s=1.0)


def window(end_s: float, seconds: float) -> tuple[dt.datetime, dt.datetime]:
    """The ``seconds`` before ``end_s`` (unix seconds), at least a minute: ALB and Lambda metrics have
    one-minute resolution."""
    end = dt.datetime.fromtimestamp(end_s, dt.UTC)
    return end - dt.timedelta(seconds=max(seconds, MIN_WINDOW_S)), end


def _queries(namespace: str, dims: list[dict[str, str]], start: dt.datetime,
             end: dt.datetime) -> Callable[[str, str, str], dict[str, Any]]:
    """A builder of get_metric_data queries of one resource over [start, end], one period for the whole."""
    period = max(MIN_WINDOW_S, math.ceil((end - start).total_seconds() / 60) * 60)

    def query(qid: str, metric: str, stat: str) -> dict[str, Any]:
        return {"Id": qid, "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": metric,
                                                     "Dimensions": dims}, "Period": period, "Stat": stat}}
    return query


def sample_of(aws: Aws, namespace: str, dims: list[dict[str, str]], start: dt.datetime, end: dt.datetime, *,
              requests: str, errors: str, latency: str, latency_to_s: float) -> Sample:
    """Sums of ``requests`` and ``errors`` and the p99 of ``latency`` (times ``latency_to_s``: seconds)."""
    query = _queries(namespace, dims, start, end)

    counts = aws.call("cloudwatch", "get_metric_data", StartTime=start, EndTime=end, MetricDataQueries=[
        query("requests", requests, "Sum"), query("errors", errors, "Sum")])
    values = {r["Id"]: sum(r.get("Values") or []) for r in counts["MetricDataResults"]}
    try:
        answered = aws.call("cloudwatch", "get_metric_data", StartTime=start, EndTime=end,
                            MetricDataQueries=[query("p99", latency, "p99")])
        found = [v for r in answered["MetricDataResults"] for v in r.get("Values") or []]
        p99, problem = (max(found) * latency_to_s, None) if found else (None, f"no {latency} data")
    except AwsError as exc:
        p99, problem = None, f"CloudWatch did not answer {latency} p99 ({exc.message})"
    return Sample(values.get("requests", 0.0), values.get("errors", 0.0), p99, problem)


def watch_values(got: Sample, seconds: float) -> dict[str, float | None]:
    """A sample in the watch's names and units (agents/observability/metrics.py): ``error_rate`` a share,
    ``latency_p99`` seconds, ``request_rate`` per second over ``seconds``. Without requests there is no
    error rate or latency (as in Prometheus, where 0/0 has no value), never a clean 0."""
    return {"error_rate": got.errors / got.requests if got.requests else None,
            "latency_p99": got.p99_s if got.requests else None,
            "request_rate": got.requests / seconds}


def service_cpu(aws: Aws, cluster: str, service: str, start: dt.datetime, end: dt.datetime) -> float | None:
    """ECS's ``CPUUtilization`` of one ECS service over [start, end]: the mean percent of its tasks'
    reserved CPU (None without data)."""
    dims = [{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": service}]
    return _cpu(aws, "AWS/ECS", dims, start, end)


def group_cpu(aws: Aws, group: str, start: dt.datetime, end: dt.datetime) -> float | None:
    """EC2's ``CPUUtilization`` of an Auto Scaling group's instances over [start, end] (None without data)."""
    return _cpu(aws, "AWS/EC2", [{"Name": "AutoScalingGroupName", "Value": group}], start, end)


def _cpu(aws: Aws, namespace: str, dims: list[dict[str, str]], start: dt.datetime, end: dt.datetime) -> float | None:
    query = _queries(namespace, dims, start, end)
    found = aws.call("cloudwatch", "get_metric_data", StartTime=start, EndTime=end,
                     MetricDataQueries=[query("cpu", "CPUUtilization", "Average")])
    values = [v for r in found["MetricDataResults"] for v in r.get("Values") or []]
    return sum(values) / len(values) if values else None


def cloudwatch_judge(aws: Aws, groups: tuple[TargetGroup, TargetGroup], *, error_rate: float,
                     latency_ms: int | None, on_judged: Callable[[TrafficStep, str, str], None],
                     clock: Callable[[], float] | None = None) -> Judge:
    """The judge of ECS traffic steps: canary target group against baseline in CloudWatch."""
    now = clock or (lambda: dt.datetime.now(dt.UTC).timestamp())

    def judge(step: TrafficStep) -> str:
        if step.old is None:
            return "inconclusive"
        start, end = window(now(), step.pause_s)
        canary = sample(aws, groups[colour_of(step.new)], start, end)
        baseline = sample(aws, groups[colour_of(step.old)], start, end)
        verdict, reason = verdict_of(canary, baseline, error_rate=error_rate, latency_ms=latency_ms)
        on_judged(step, verdict, reason)
        return verdict

    return judge


def verdict_of(canary: Sample, baseline: Sample, *, error_rate: float, latency_ms: int | None,
               errors: str = "5xx") -> tuple[str, str]:
    """("pass" | "fail" | "inconclusive", why)."""
    if canary.requests < MIN_REQUESTS:
        return "inconclusive", f"{canary.requests:.0f} canary requests, need {MIN_REQUESTS}"
    rate, base = canary.error_rate, baseline.error_rate
    said = f"{errors} {rate:.1f}% (baseline {base:.1f}%) over {canary.requests:.0f} requests"
    if rate > error_rate:
        return "fail", f"{said}: above the threshold {error_rate:g}%"
    if baseline.requests >= MIN_REQUESTS and rate > base + TOLERANCE_POINTS:
        return "fail", f"{said}: worse than the baseline by more than {TOLERANCE_POINTS:g} points"
    if canary.p99_s is not None and latency_ms is not None and canary.p99_s * 1000 > latency_ms:
        return "fail", f"p99 {canary.p99_s * 1000:.0f} ms is above the threshold {latency_ms} ms; {said}"
    latency = f"p99 {canary.p99_s * 1000:.0f} ms" if canary.p99_s is not None else canary.p99_problem
    return "pass", f"{said}; {latency}"


def with_cloudwatch(own: Judge, caller: Judge | None) -> Judge:
    """CloudWatch judges every step (no Prometheus sees ECS tasks); a caller's judge can only make a step
    stricter: its fail fails the step, its pass or inconclusive (e.g. Prometheus without ECS data)
    leaves the verdict to CloudWatch."""
    if caller is None:
        return own

    def judge(step: TrafficStep) -> str:
        theirs = str(caller(step))
        return "fail" if theirs == "fail" else own(step)
    return judge
