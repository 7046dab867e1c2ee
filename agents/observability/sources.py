"""Where the watch after a full release reads a service's metrics: one source per runtime.

:func:`source_for` chooses by where the release runs (the live state's ``runtime``; the configured one
when nothing is live yet): ``docker`` and ``kubernetes`` are scraped by Prometheus
(:class:`PrometheusSource`); an ECS service is read from the ALB's CloudWatch metrics of the target
group of the colour that holds the traffic (:class:`EcsSource`; an EC2 colour's the same way, its CPU
from its Auto Scaling group: :class:`Ec2Source`); a Lambda function from its own
CloudWatch metrics of the version the alias points at (:class:`LambdaSource`). Every source answers in
the watch's names and units (agents/observability/metrics.py): ``error_rate`` a share, ``latency_p99``
seconds, ``cpu`` percent. What a source cannot measure is None (on ECS ``memory`` and
``memory_growth``; on Lambda also ``cpu``), and so is everything of a version that no longer holds the
traffic: a release that was rolled back or replaced is not watched further.

CloudWatch keeps one point a minute: its sources look at the last minute at least (``policy.rate_window``
when longer), and each look opens its own AWS clients and closes them.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from agents.deploy.targets.awslambda.metrics import version_sample
from agents.deploy.targets.ecs import resources
from agents.deploy.targets.ecs.aws import Aws
from agents.deploy.targets.ecs.metrics import group_cpu, sample, service_cpu, watch_values, window
from agents.deploy.targets.kubernetes.api import CallStats
from agents.deploy.targets.state import Release, get_live
from agents.iac import outputs
from agents.observability.canary import prometheus_for
from agents.observability.metrics import MetricsError, Prometheus, Selector, metric_queries
from agents.observability.policy import Policy
from orchestra.config.types import Ec2Fleet, EcsCluster, LambdaFunction
from orchestra.errors import StageFailed

if TYPE_CHECKING:
    from redis import Redis

    from agents.context import AgentContext
    from agents.observability.watch import WatchedRelease

PROMETHEUS_RUNTIMES = ("docker", "kubernetes")
OpenAws = Callable[[str | None], Aws]


class SourceError(MetricsError):
    """A watch source could not be chosen, or CloudWatch could not be read."""


class WatchSource(Protocol):
    """The current values of a released version's metrics."""

    def values(self, rel: WatchedRelease, names: set[str], policy: Policy,
               now: float) -> dict[str, float | None]: ...


class PrometheusSource:
    """The version's series in Prometheus (the local target's file_sd, a cluster's pod discovery)."""

    def __init__(self, prom: Prometheus) -> None:
        self.prom = prom

    def values(self, rel: WatchedRelease, names: set[str], policy: Policy, now: float) -> dict[str, float | None]:
        queries = metric_queries(Selector(rel.service, rel.version), policy.rate_window)
        return {name: self.prom.value(queries[name], at=now) for name in sorted(names) if name in queries}


class _CloudWatchSource:
    """What the ECS and Lambda sources share: the live release, one AWS session a look, errors said."""

    what = "CloudWatch"
    settings: EcsCluster | Ec2Fleet | LambdaFunction

    def __init__(self, redis: Redis, settings: EcsCluster | Ec2Fleet | LambdaFunction, *,
                 open_aws: OpenAws = Aws) -> None:
        self.redis, self.settings, self.open_aws = redis, settings, open_aws
        self.stats = CallStats()  # every look's AWS calls, for benchmarks

    def values(self, rel: WatchedRelease, names: set[str], policy: Policy, now: float) -> dict[str, float | None]:
        release = _holding_traffic(self.redis, rel)
        out: dict[str, float | None] = {}
        try:
            if release is not None:
                aws = self.open_aws(self.settings.region)
                try:
                    out = self._read(aws, rel, release, names, policy, now)
                finally:
                    self._done(aws)
        except StageFailed as exc:  # AWS's errors, and the ALB no longer as the deploy left it
            raise SourceError(f"cannot read {rel.service} {rel.version}'s {self.what}: {exc.message}",
                              hint=exc.hint) from exc
        return {name: out.get(name) for name in sorted(names)}

    def _read(self, aws: Aws, rel: WatchedRelease, release: Release, names: set[str], policy: Policy,
              now: float) -> dict[str, float | None]:
        raise NotImplementedError

    def _done(self, aws: Aws) -> None:
        """Add the look's calls to ``stats`` and close its clients."""
        self.stats.calls += aws.stats.calls
        self.stats.seconds += aws.stats.seconds
        for call, count in aws.stats.by_call.items():
            self.stats.by_call[call] = self.stats.by_call.get(call, 0) + count
        aws.close()


class EcsSource(_CloudWatchSource):
    """The ALB's metrics of the live colour's target group, and the colour's ECS service CPU."""

    what = "ALB metrics in CloudWatch"
    settings: EcsCluster | Ec2Fleet
    section = "ecs"  # the environment's settings that name the target groups and listener

    def _read(self, aws: Aws, rel: WatchedRelease, release: Release, names: set[str], policy: Policy,
              now: float) -> dict[str, float | None]:
        groups = resources.target_groups(aws, self.settings, rel.service, rel.env, section=self.section)
        # the Listener knows the ALB whose LoadBalancer dimension the target group's metrics carry
        groups = resources.Listener(aws, self.settings.listener, groups, section=self.section).groups
        start, end = window(now, policy.rate_window_s)
        out = watch_values(sample(aws, groups[resources.colour_of(release)], start, end),
                           (end - start).total_seconds())
        if "cpu" in names:
            out["cpu"] = self._cpu(aws, release, start, end)
        return out

    def _cpu(self, aws: Aws, release: Release, start: dt.datetime, end: dt.datetime) -> float | None:
        cluster = self.settings.cluster if isinstance(self.settings, EcsCluster) else ""
        return service_cpu(aws, cluster, release.container, start, end)


class Ec2Source(EcsSource):
    """The ALB's metrics of the live colour's target group, and its Auto Scaling group's instances' CPU."""

    section = "ec2"

    def _cpu(self, aws: Aws, release: Release, start: dt.datetime, end: dt.datetime) -> float | None:
        return group_cpu(aws, release.container, start, end)


class LambdaSource(_CloudWatchSource):
    """Lambda's metrics of the published version the alias points at."""

    what = "Lambda metrics in CloudWatch"
    settings: LambdaFunction

    def _read(self, aws: Aws, rel: WatchedRelease, release: Release, names: set[str], policy: Policy,
              now: float) -> dict[str, float | None]:
        function, number = release.container.rsplit(":", 1)
        start, end = window(now, policy.rate_window_s)
        got = version_sample(aws, function, self.settings.alias, number, start, end)
        return watch_values(got, (end - start).total_seconds())


def _holding_traffic(redis: Redis, rel: WatchedRelease) -> Release | None:
    """The live release of ``rel``'s version, when it still holds the service's traffic."""
    state = get_live(redis, rel.service, rel.env)
    if state is None or state.current is None or state.current.version != rel.version:
        return None
    return state.current


def runtime_of(ctx: AgentContext, rel: WatchedRelease) -> str:
    """Where ``rel`` runs: the live state's runtime, or the configured one when nothing is live."""
    state = get_live(ctx.redis, rel.service, rel.env)
    return state.runtime if state is not None else ctx.config.service(rel.service).runtime


def source_for(ctx: AgentContext, rel: WatchedRelease) -> WatchSource:
    """The source of ``rel``'s metrics, by the runtime it was released on."""
    runtime = runtime_of(ctx, rel)
    if runtime in PROMETHEUS_RUNTIMES:
        return PrometheusSource(prometheus_for(ctx))
    environment = ctx.config.environment(rel.env)
    if runtime == "ecs" and environment.ecs is not None:
        return EcsSource(ctx.redis, environment.ecs)
    if runtime == "ec2":
        try:  # the listener the last apply made, as the deploy used it
            fleet = outputs.ec2_settings(ctx.redis, ctx.config.project.name, rel.env, environment.ec2)
        except StageFailed as exc:
            raise SourceError(exc.message, hint=exc.hint) from exc
        if fleet is not None:
            return Ec2Source(ctx.redis, fleet)
    if runtime == "lambda" and environment.lambda_ is not None:
        return LambdaSource(ctx.redis, environment.lambda_)
    if runtime in ("ecs", "ec2", "lambda"):
        raise SourceError(f"{rel.service} runs on {runtime} in {rel.env}, but devops_orchestra.yaml has no "
                          f"environments.{rel.env}.{runtime} settings to read its metrics with",
                          hint=f"put back environments.{rel.env}.{runtime} (region, and what the deploy used)")
    raise SourceError(f"no watch metric source for runtime `{runtime}` ({rel.service} in {rel.env})",
                      hint=f"watched runtimes: {', '.join((*PROMETHEUS_RUNTIMES, 'ecs', 'ec2', 'lambda'))}")
