"""The Lambda target (``runtime: lambda``): a published version per deploy behind a weighted alias.

A deploy points the function (package type Image, created by the platform) at the new image and the
service's environment, waits until the update is done, publishes a version and waits until it is
Active. Blue-green moves the alias to it at once; canary keeps the alias on the old version and gives
the new one ``AdditionalVersionWeights``, step by step, each step judged on CloudWatch (``Errors``
against ``Invocations`` and ``Duration`` p99 per executed version). A failure or a rollback puts the
alias back. Versions are immutable and cost nothing idle, so there is nothing to reap.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis

from agents.deploy import intent
from agents.deploy.intent import DeployIntent
from agents.deploy.strategies import Judge, Paused, Shift, TrafficStep, go_on
from agents.deploy.targets.awslambda.metrics import version_sample
from agents.deploy.targets.base import DeployOutcome, Plan, Report
from agents.deploy.targets.ecs.aws import Aws, AwsError
from agents.deploy.targets.ecs.metrics import Sample, verdict_of, window, with_cloudwatch
from agents.deploy.targets.live import LiveTarget, move
from agents.deploy.targets.state import LiveState, Release, get_live, set_live
from orchestra.config.types import LambdaFunction
from orchestra.errors import StageFailed
from orchestra.locks import current_fence

POLL_S = 0.2


def number_of(release: Release) -> str:
    """The published version number of a release (``web-staging:7`` -> ``7``)."""
    return release.container.rsplit(":", 1)[1]


class AliasSplit:
    """Traffic between two published versions by the alias's weights."""

    def __init__(self, aws: Aws, function: str, alias: str) -> None:
        self.aws, self.function, self.alias = aws, function, alias

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        if old is None or weight >= 100:
            self.point(number_of(new))
        elif weight <= 0:
            self.point(number_of(old))
        else:
            self.point(number_of(old), {number_of(new): round(weight / 100, 2)})
        return {new.version: weight, **({old.version: 100 - weight} if old else {})}

    def point(self, version: str, extra: dict[str, float] | None = None) -> None:
        self.aws.call("lambda", "update_alias", FunctionName=self.function, Name=self.alias,
                      FunctionVersion=version, RoutingConfig={"AdditionalVersionWeights": extra or {}})


class LambdaTarget(LiveTarget):
    """Deploy, undo and roll back functions in one region."""

    runtime = "lambda"

    def __init__(self, aws: Aws, redis: Redis, settings: LambdaFunction, *, secret_keys: list[str],
                 error_rate: float = 5.0, latency_ms: int | None = 1000,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.aws, self.redis, self.settings = aws, redis, settings
        self.secret_keys = secret_keys
        self.error_rate, self.latency_ms = error_rate, latency_ms
        self._sleeper = sleep
        self.waited_s = 0.0  # time spent sleeping between state polls (for benchmarks)

    def sleep(self, seconds: float) -> None:
        self.waited_s += seconds
        self._sleeper(seconds)

    def function(self, service: str, env: str) -> str:
        return self.settings.function.replace("{service}", service).replace("{env}", env)

    # -- the interface ------------------------------------------------------------------------------

    def wait_healthy(self, release: Release, health: str, timeout: float | None = None) -> float:
        """Seconds until the published version is Active; StageFailed with Lambda's reason otherwise."""
        function, number = release.container.rsplit(":", 1)
        return self._wait(function, number, timeout or self.settings.update_timeout)

    def logs(self, release: Release, lines: int = 50) -> str:
        group = f"/aws/lambda/{release.container.rsplit(':', 1)[0]}"
        try:
            found = self.aws.call("logs", "filter_log_events", logGroupName=group, limit=1000)
        except AwsError as exc:
            return f"(no logs in {group}: {exc.message})"
        messages = [str(e.get("message", "")).rstrip() for e in found.get("events") or []]
        return "\n".join(messages[-lines:]) or f"(no log lines in {group})"

    def scrape_address(self, release: Release) -> str | None:
        return None  # the judge reads CloudWatch

    def reap(self, now: float | None = None) -> list[str]:
        return []  # published versions are immutable and cost nothing idle

    def close(self) -> None:
        self.aws.close()

    def deploy(self, plan: Plan, *, judge: Judge | None, report: Report) -> DeployOutcome:
        self._put_back_interrupted(plan, report)
        before = get_live(self.redis, plan.service, plan.env)
        function = self.function(plan.service, plan.env)
        state = before or LiveState(service=plan.service, env=plan.env, edge_port=0, edge_prefix="",
                                    runtime=self.runtime, location=f"{function}:{self.settings.alias} "
                                                                   f"({self.aws.region})")
        current = state.current
        if current and current.image == plan.image and state.weights.get(current.version) == 100:
            return DeployOutcome(before, state, changed=False)
        if self.secret_keys:
            raise StageFailed(f"not supported yet: secrets.keys on Lambda ({', '.join(self.secret_keys)})",
                              hint="Lambda has no secret injection; read them from Secrets Manager in the "
                                   "function, or deploy the service on ecs or kubernetes")
        arn = self._check_function(function)
        alias = self._alias(function)
        state = state.model_copy(update={"address": f"{arn}:{self.settings.alias}"})
        self._triggered(plan, state, report, where=f"lambda {state.location}")
        started = time.monotonic()
        split = AliasSplit(self.aws, function, self.settings.alias)
        new: Release | None = None
        if (fence := current_fence()) is not None:  # the intent first: a worker killed from here on is undone
            unpublished = Release(version=plan.version, image=plan.image, port=0, container=f"{function}:$LATEST",
                                  run_id=plan.run_id, ref=plan.ref)  # the version's number once it is published
            intent.starting(self.redis, fence, new=unpublished, before=before, state=state, runtime=self.runtime,
                            health=plan.health, strategy=plan.strategy)
        try:
            env = {**plan.extra_env, "APP_VERSION": plan.version, "ORCHESTRA_ENV": plan.env}
            self.aws.call("lambda", "update_function_configuration", FunctionName=function,
                          Environment={"Variables": env})
            self._wait(function, None, self.settings.update_timeout)
            self.aws.call("lambda", "update_function_code", FunctionName=function, ImageUri=plan.image)
            self._wait(function, None, self.settings.update_timeout)
            number = str(self.aws.call("lambda", "publish_version", FunctionName=function,
                                       Description=f"{plan.version} ({plan.run_id})")["Version"])
            new = Release(version=plan.version, image=plan.image, port=0, container=f"{function}:{number}",
                          run_id=plan.run_id, ref=plan.ref)
            ready_s = self.wait_healthy(new, plan.health)
            report("progress", {"phase": "healthy", "version": plan.version, "published": number,
                                "seconds": ready_s})
            if alias is None:
                self.aws.call("lambda", "create_alias", FunctionName=function, Name=self.settings.alias,
                              FunctionVersion=number)
            verdicts = self._move(plan, state, new, split, function, judge, report)
        except Paused:
            raise  # a paced canary at its first weight: go_on carries it on in scheduled checks
        except Exception:
            if current is not None:
                split.point(number_of(current))
            elif alias is None and new is not None:
                self.aws.call("lambda", "delete_alias", FunctionName=function, Name=self.settings.alias)
            self._put_back(before, plan)
            raise
        after = self._went_live(state, new, plan)
        return DeployOutcome(before, after, True, {"health": ready_s,
                                                   "total": round(time.monotonic() - started, 2)}, verdicts)

    def go_on(self, plan: Plan, left: DeployIntent, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """One scheduled check of the paced canary this run's intent ``left`` describes: judged on CloudWatch and
        moved on (:func:`agents.deploy.strategies.go_on`), live at 100 %; Paused to look again; on a failure (or
        a cancel) the alias goes back to the old version alone and the error is raised."""
        function = self.function(plan.service, plan.env)
        state, new = left.state or get_live(self.redis, plan.service, plan.env), left.new
        if state is None or left.old is None:  # a first release takes all traffic at once: it never pauses
            raise StageFailed(f"the canary of {plan.service} in {plan.env} has no release to share traffic with",
                              hint="deploy it again")
        live = get_live(self.redis, plan.service, plan.env)
        applied = live is not None and live.weights.get(new.version) == left.weight
        split = AliasSplit(self.aws, function, self.settings.alias)
        shift, judged = self._shift(plan, state, new, left.old, split, function, judge, report)
        try:
            go_on(shift, plan.steps, judged, step=left.step, weight=left.weight, since=left.updated_at,
                  asked=left.asked, applied=applied, pause_s=plan.pause_s)
        except Paused:
            raise
        except Exception:
            split.point(number_of(left.old))
            self._put_back(left.before, plan)
            raise
        after = self._went_live(state, new, plan)
        now = intent.get(self.redis, plan.service, plan.env)
        return DeployOutcome(left.before, after, True, {}, list(now.verdicts) if now else [])

    # -- the hooks of LiveTarget ------------------------------------------------------------------------

    def _keep(self, release: Release, keep_s: float) -> Release:
        return release.model_copy(update={"keep_until": None})  # a published version needs no keeping

    def _bring_back(self, state: LiveState, release: Release, health: str, *,
                    beside: Release | None) -> Release:
        function = release.container.rsplit(":", 1)[0]
        AliasSplit(self.aws, function, self.settings.alias).point(number_of(release))
        return release

    def _retire(self, release: Release, state: LiveState) -> None:
        pass  # the published version stays, immutable; the alias no longer points at it

    def _take_down(self, state: LiveState) -> None:
        """The function had no release before: its alias goes (if the deploy got as far as creating it)."""
        try:
            self.aws.call("lambda", "delete_alias", FunctionName=self.function(state.service, state.env),
                          Name=self.settings.alias)
        except AwsError as exc:
            if exc.code != "ResourceNotFoundException":
                raise

    # -- helpers ------------------------------------------------------------------------------------

    def _check_function(self, function: str) -> str:
        """The function's ARN; a clear error when it is missing or not an image function."""
        try:
            found = self.aws.call("lambda", "get_function_configuration", FunctionName=function)
        except AwsError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            raise StageFailed(f"the Lambda function {function} does not exist in {self.aws.region}",
                              hint="create it (package type Image, with its execution role); each deploy "
                                   "publishes a version of it") from exc
        if found.get("PackageType") != "Image":
            raise StageFailed(f"the Lambda function {function} is a {found.get('PackageType')} function",
                              hint="the deploy publishes container images: create it with package type Image")
        return str(found["FunctionArn"])

    def _alias(self, function: str) -> dict[str, Any] | None:
        try:
            return self.aws.call("lambda", "get_alias", FunctionName=function, Name=self.settings.alias)
        except AwsError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            return None

    def _wait(self, function: str, qualifier: str | None, timeout: float) -> float:
        started = time.monotonic()
        extra = {"Qualifier": qualifier} if qualifier else {}
        while True:
            found = self.aws.call("lambda", "get_function_configuration", FunctionName=function, **extra)
            state, update = found.get("State"), found.get("LastUpdateStatus")
            if state == "Failed" or update == "Failed":
                reason = found.get("StateReason") or found.get("LastUpdateStatusReason") or "no reason given"
                raise StageFailed(f"{function}{':' + qualifier if qualifier else ''} failed: {reason}",
                                  hint="check the image (built for Lambda, in a registry the function may "
                                       "pull from) and the function's role")
            if state == "Active" and update in (None, "Successful"):
                return round(time.monotonic() - started, 2)
            if time.monotonic() - started >= timeout:
                raise StageFailed(f"{function} was not Active within {timeout:.0f}s (state {state}, last "
                                  f"update {update})", hint="raise environments.<env>.lambda.update_timeout")
            self.sleep(POLL_S)

    def _move(self, plan: Plan, state: LiveState, new: Release, split: AliasSplit, function: str,
              judge: Judge | None, report: Report) -> list[dict[str, object]]:
        shift, judged = self._shift(plan, state, new, state.current, split, function, judge, report)
        return move(shift, plan, judged)

    def _shift(self, plan: Plan, state: LiveState, new: Release, old: Release | None, split: AliasSplit,
               function: str, judge: Judge | None, report: Report) -> tuple[Shift, Judge]:
        def on_shift(step: int, weights: dict[str, int]) -> None:
            set_live(self.redis, state.model_copy(update={"weights": weights}))
            report("progress", {"phase": "shift", "step": step, "weights": weights, "url": state.url})

        shift = Shift(split, new, old, on_shift, service=plan.service, env=plan.env, runtime=self.runtime)
        return shift, with_cloudwatch(self._judge(function, report), judge)

    def _judge(self, function: str, report: Report) -> Judge:
        """Errors/Invocations and Duration p99 of the new version against the old one, via the alias."""
        def judge(step: TrafficStep) -> str:
            if step.old is None:
                return "inconclusive"
            start, end = window(time.time(), step.pause_s)

            def of(release: Release) -> Sample:
                return version_sample(self.aws, function, self.settings.alias, number_of(release), start, end)

            verdict, reason = verdict_of(of(step.new), of(step.old), error_rate=self.error_rate,
                                         latency_ms=self.latency_ms, errors="errors")
            report("progress", {"phase": "judged", "step": step.step, "weight": step.weight, "verdict": verdict,
                                "reason": reason, "source": "cloudwatch"})
            return verdict
        return judge
