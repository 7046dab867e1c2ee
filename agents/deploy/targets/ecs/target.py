"""The ECS target (``runtime: ecs``): one ECS service per colour behind an ALB listener's weights.

A deploy registers a task definition revision for the version, points the idle colour's ECS service
at it (created on first use, bound to the colour's target group), waits until the colour's target
group has ``replicas`` healthy targets, then moves the listener's weights with the plan's strategy
(blue-green: 0/100 at once; canary: the steps, each judged on CloudWatch unless the caller judges).
The old colour stays scaled for ``keep_previous``. A failure or a rollback puts the weights back first,
then scales. Secrets reach the task as Secrets Manager ARNs; a missing one stops the deploy before
anything changes. A restart (the always-on watch's) forces a new deployment of the colour's ECS service
that holds the release (fresh tasks of the same task definition), then waits for its healthy targets.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis

from agents.deploy import intent
from agents.deploy.intent import DeployIntent
from agents.deploy.strategies import Judge, Paused, Shift, TrafficStep, go_on
from agents.deploy.targets.base import DeployOutcome, Plan, Report
from agents.deploy.targets.ecs import health
from agents.deploy.targets.ecs import resources as r
from agents.deploy.targets.ecs.aws import Aws, AwsError
from agents.deploy.targets.ecs.metrics import cloudwatch_judge, with_cloudwatch
from agents.deploy.targets.live import LiveTarget, move
from agents.deploy.targets.state import LiveState, Release, get_live, set_live
from orchestra.config.types import EcsCluster
from orchestra.errors import NotFound, StageFailed
from orchestra.intents import ENVIRONMENTS
from orchestra.locks import current_fence


class EcsTarget(LiveTarget):
    """Deploy, undo and roll back services on one ECS cluster behind one ALB listener."""

    runtime = "ecs"
    restartable = True

    def __init__(self, aws: Aws, redis: Redis, settings: EcsCluster, *, replicas: dict[str, int],
                 secret_keys: list[str], secrets_manager: str, error_rate: float = 5.0,
                 latency_ms: int | None = 1000, sleep: Callable[[float], None] = time.sleep) -> None:
        self.aws = aws
        self.redis = redis
        self.settings = settings
        self.replicas = replicas
        self.secret_keys = secret_keys
        self.secrets_manager = secrets_manager
        self.error_rate = error_rate
        self.latency_ms = latency_ms
        self._sleeper = sleep
        self.waited_s = 0.0

    def sleep(self, seconds: float) -> None:
        self.waited_s += seconds
        self._sleeper(seconds)

    # -- the interface ------------------------------------------------------------------------------

    def wait_healthy(self, release: Release, health_path: str, timeout: float | None = None) -> float:
        service, env = self._owner(release)
        group = r.target_groups(self.aws, self.settings, service, env)[r.colour_of(release)]
        return health.wait_healthy(self.aws, self.settings.cluster, release, group, self.replicas.get(service, 1),
                                   timeout or self.settings.rollout_timeout, self.sleep,
                                   r.log_group(self.settings, service, env))

    def logs(self, release: Release, lines: int = 50) -> str:
        service, env = self._owner(release)
        return health.logs(self.aws, r.log_group(self.settings, service, env), release, lines)

    def scrape_address(self, release: Release) -> str | None:
        return None  # the judge reads CloudWatch (agents.deploy.targets.ecs.metrics)

    def restart(self, state: LiveState, release: Release, health: str) -> str:
        """A new deployment of the colour's ECS service holding ``release``, then its healthy targets."""
        running = self._task_image(release.container)
        if running is None:
            raise NotFound(f"the ECS service {release.container} was not found in cluster {self.settings.cluster}",
                           hint=f"deploy {state.service} again, or `/rollback {state.service} {state.env}`")
        if running != release.image:
            raise NotFound(f"{state.service} {release.version} was not found in the ECS service {release.container} "
                           f"(it runs {running})", hint=f"deploy {state.service} again")
        self.aws.call("ecs", "update_service", cluster=self.settings.cluster, service=release.container,
                      forceNewDeployment=True)
        took = self.wait_healthy(release, health)
        return f"new deployment of the ECS service {release.container} (forceNewDeployment); " \
               f"healthy again in {took:.1f}s"

    def close(self) -> None:
        self.aws.close()

    def deploy(self, plan: Plan, *, judge: Judge | None, report: Report) -> DeployOutcome:
        self._put_back_interrupted(plan, report)
        before = get_live(self.redis, plan.service, plan.env)
        state = before or self._new_state(plan)
        current = state.current
        if current and current.image == plan.image and state.weights.get(current.version) == 100:
            return DeployOutcome(before, state, changed=False)
        secrets = self._secret_arns(plan.env)  # a missing secret stops the deploy before anything changes
        groups = r.target_groups(self.aws, self.settings, plan.service, plan.env)
        listener = r.Listener(self.aws, self.settings.listener, groups)
        groups = listener.groups
        colour = 1 - r.colour_of(current) if current else 0
        name = r.service_name(plan.service, plan.env, r.COLOURS[colour])
        params = r.task_definition(plan, self.settings, self.aws.region, secrets)
        state = state.model_copy(update={"address": state.address or self._address(listener)})
        self._triggered(plan, state, report, where=f"ecs {state.location}", colour=r.COLOURS[colour])
        started = time.monotonic()
        new = Release(version=plan.version, image=plan.image, port=plan.port_hint or 5000, container=name,
                      run_id=plan.run_id, ref=plan.ref)
        if state.previous is not None and state.previous.container == name:
            state = state.model_copy(update={"previous": None})  # the idle colour is about to run the new version
        undone = before.model_copy(update={"previous": state.previous}) if before else None  # what a failure leaves
        if (fence := current_fence()) is not None:  # the intent first: a worker killed from here on is undone
            intent.starting(self.redis, fence, new=new, before=undone, state=state, runtime=self.runtime,
                            health=plan.health, strategy=plan.strategy)
        try:
            arn = self.aws.call("ecs", "register_task_definition", **params)["taskDefinition"]["taskDefinitionArn"]
            self._run(plan.service, name, arn, groups[colour], plan.replicas, plan.port_hint or 5000)
            ready_s = self.wait_healthy(new, plan.health)
            report("progress", {"phase": "healthy", "version": plan.version, "replicas": plan.replicas,
                                "seconds": ready_s, "task_definition": arn})
            verdicts = self._move(plan, state, new, listener, groups, judge, report)
        except Paused:
            raise  # a paced canary at its first weight: go_on carries it on in scheduled checks
        except Exception:
            self._undo(state, new, listener)
            self._put_back(undone, plan)
            raise
        after = self._went_live(state, new, plan)
        return DeployOutcome(before, after, True, {"health": ready_s,
                                                   "total": round(time.monotonic() - started, 2)}, verdicts)

    def go_on(self, plan: Plan, left: DeployIntent, *, judge: Judge | None, report: Report) -> DeployOutcome:
        """One scheduled check of the paced canary this run's intent ``left`` describes: judged on CloudWatch and
        moved on (:func:`agents.deploy.strategies.go_on`), live at 100 %; Paused to look again; on a failure (or
        a cancel) the listener's weights go back to the old colour, the new one is scaled to 0, the error raised."""
        state, new = left.state or self._new_state(plan), left.new
        groups = r.target_groups(self.aws, self.settings, plan.service, plan.env)
        listener = r.Listener(self.aws, self.settings.listener, groups)
        live = get_live(self.redis, plan.service, plan.env)
        applied = live is not None and live.weights.get(new.version) == left.weight
        shift, judged = self._shift(plan, state, new, left.old, listener, listener.groups, judge, report)
        try:
            go_on(shift, plan.steps, judged, step=left.step, weight=left.weight, since=left.updated_at,
                  asked=left.asked, applied=applied, pause_s=plan.pause_s)
        except Paused:
            raise
        except Exception:
            self._undo(state, new, listener)
            self._put_back(left.before, plan)
            raise
        after = self._went_live(state, new, plan)
        now = intent.get(self.redis, plan.service, plan.env)
        return DeployOutcome(left.before, after, True, {}, list(now.verdicts) if now else [])

    # -- deploying ----------------------------------------------------------------------------------

    def _secret_arns(self, env: str) -> dict[str, str]:
        if not self.secret_keys:
            return {}
        if self.secrets_manager != "aws_secrets_manager":
            raise StageFailed(f"secrets.manager is `{self.secrets_manager}`: ECS tasks get their secrets from "
                              "Secrets Manager by ARN", hint="set secrets.manager: aws_secrets_manager and store "
                              f"each key as the secret {self.settings.secret_prefix}<KEY>")
        arns = {}
        for key in self.secret_keys:
            secret_id = self.settings.secret_prefix.replace("{env}", env) + key
            try:
                arns[key] = str(self.aws.call("secretsmanager", "describe_secret", SecretId=secret_id)["ARN"])
            except AwsError as exc:
                if exc.code != "ResourceNotFoundException":
                    raise
                raise StageFailed(f"the secret {key} is missing: no Secrets Manager secret {secret_id} in "
                                  f"{self.aws.region}", hint=f"create it (aws secretsmanager create-secret "
                                  f"--name {secret_id}); nothing was deployed") from exc
        return arns

    def _run(self, service: str, name: str, task_def: str, group: r.TargetGroup, replicas: int, port: int) -> None:
        """Point the colour's ECS service at ``task_def`` with ``replicas`` tasks (created if missing)."""
        found = self.aws.call("ecs", "describe_services", cluster=self.settings.cluster, services=[name])
        if any(s.get("status") == "ACTIVE" for s in found.get("services") or []):
            self.aws.call("ecs", "update_service", cluster=self.settings.cluster, service=name,
                          taskDefinition=task_def, desiredCount=replicas, forceNewDeployment=True)
            return
        self.aws.call("ecs", "create_service", cluster=self.settings.cluster, serviceName=name,
                      taskDefinition=task_def, desiredCount=replicas, launchType=self.settings.launch_type,
                      loadBalancers=[{"targetGroupArn": group.arn, "containerName": service, "containerPort": port}],
                      healthCheckGracePeriodSeconds=30, **r.network(self.settings))

    def _move(self, plan: Plan, state: LiveState, new: Release, listener: r.Listener,
              groups: tuple[r.TargetGroup, r.TargetGroup], judge: Judge | None,
              report: Report) -> list[dict[str, object]]:
        shift, judged = self._shift(plan, state, new, state.current, listener, groups, judge, report)
        return move(shift, plan, judged)

    def _shift(self, plan: Plan, state: LiveState, new: Release, old: Release | None, listener: r.Listener,
               groups: tuple[r.TargetGroup, r.TargetGroup], judge: Judge | None,
               report: Report) -> tuple[Shift, Judge]:
        def on_shift(step: int, weights: dict[str, int]) -> None:
            set_live(self.redis, state.model_copy(update={"weights": weights}))
            report("progress", {"phase": "shift", "step": step, "weights": weights, "url": state.url})

        def on_judged(step: TrafficStep, verdict: str, reason: str) -> None:
            report("progress", {"phase": "judged", "step": step.step, "weight": step.weight, "verdict": verdict,
                                "reason": reason, "source": "cloudwatch"})

        shift = Shift(r.ListenerSplit(listener), new, old, on_shift, service=plan.service,
                      env=plan.env, runtime=self.runtime)
        return shift, with_cloudwatch(cloudwatch_judge(self.aws, groups, error_rate=self.error_rate,
                                                       latency_ms=self.latency_ms, on_judged=on_judged), judge)

    # -- undoing ------------------------------------------------------------------------------------

    def _undo(self, state: LiveState, new: Release, listener: r.Listener) -> None:
        """After a failed deploy: the weights back on what was live first, then the new colour scaled to 0."""
        if state.current is not None:
            self._bring_back(state, state.current, "", beside=None, listener=listener)
        if self._desired(new.container) > 0:
            self._scale(new.container, 0)

    def _bring_back(self, state: LiveState, release: Release, health_path: str, *, beside: Release | None,
                    listener: r.Listener | None = None) -> Release:
        """All weight on ``release``'s colour: at once when it still runs it, else after scaling it up."""
        if listener is None:
            groups = r.target_groups(self.aws, self.settings, state.service, state.env)
            listener = r.Listener(self.aws, self.settings.listener, groups)
        running = self._task_image(release.container)
        if running != release.image:
            raise NotFound(f"{state.service} {release.version} no longer runs in {release.container} "
                           f"(it runs {running or 'nothing'})", hint="deploy that version again instead")
        want = self.replicas.get(state.service, 1)
        if self._desired(release.container) < want:
            self._scale(release.container, want)
            self.wait_healthy(release, "")
        weights = [0, 0]
        weights[r.colour_of(release)] = 100
        listener.apply((weights[0], weights[1]))
        return release

    def _retire(self, release: Release, state: LiveState) -> None:
        if self._desired(release.container) > 0:  # a worker killed before the colour's service was created
            self._scale(release.container, 0)

    def _take_down(self, state: LiveState) -> None:
        pass  # the listener's weights stay where they are; the new colour is scaled to zero

    def _running(self, release: Release) -> bool:
        return self._desired(release.container) > 0

    def _wind_down(self, release: Release) -> None:
        self._scale(release.container, 0)

    def _task_image(self, name: str) -> str | None:
        found = self._service(name)
        if found is None:
            return None
        task = self.aws.call("ecs", "describe_task_definition", taskDefinition=found["taskDefinition"])
        return str(task["taskDefinition"]["containerDefinitions"][0]["image"])

    def _service(self, name: str) -> dict[str, Any] | None:
        found = self.aws.call("ecs", "describe_services", cluster=self.settings.cluster, services=[name])
        return next((s for s in found.get("services") or [] if s.get("status") == "ACTIVE"), None)

    def _desired(self, name: str) -> int:
        return int((self._service(name) or {}).get("desiredCount") or 0)

    def _scale(self, name: str, count: int) -> None:
        self.aws.call("ecs", "update_service", cluster=self.settings.cluster, service=name, desiredCount=count)

    def _owner(self, release: Release) -> tuple[str, str]:
        """(service, env) from the ECS service name ``<service>-<env>-<colour>``."""
        service_env = release.container.rsplit("-", 1)[0]
        for env in ENVIRONMENTS:
            if service_env.endswith(f"-{env}"):
                return service_env.removesuffix(f"-{env}"), env
        raise NotFound(f"{release.container} is not an ECS service this target made")

    def _location(self) -> str:
        return f"{self.settings.cluster} ({self.aws.region})"

    def _address(self, listener: r.Listener) -> str | None:
        found = self.aws.call("elbv2", "describe_load_balancers", LoadBalancerArns=[listener.load_balancer])
        dns = (found.get("LoadBalancers") or [{}])[0].get("DNSName")
        return f"http://{dns}" if dns else None

    def _new_state(self, plan: Plan) -> LiveState:
        return LiveState(service=plan.service, env=plan.env, edge_port=80, edge_prefix="", runtime=self.runtime,
                         location=self._location())
