"""What the ECS and EC2 targets share: two colours behind an ALB listener's weights.

A colour is a platform group (an ECS service, an Auto Scaling group) named ``<service>-<env>-<colour>``
in its own target group. A deploy checks the secrets, starts the idle colour on the release (the
subclass's :meth:`AlbColoursTarget._start`), waits until its target group has ``replicas`` healthy
targets of that release, then moves the listener's weights with the plan's strategy (blue-green: 0/100
at once; canary: the steps, each judged on CloudWatch unless the caller judges). The old colour stays
scaled for ``keep_previous``. A failure or a rollback puts the weights back first, then scales. The
deploy intent is written before the first platform change, so a worker killed mid-deploy is undone.
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
from orchestra.config.types import Ec2Fleet, EcsCluster
from orchestra.errors import NotFound, StageFailed
from orchestra.intents import ENVIRONMENTS
from orchestra.locks import current_fence


class AlbColoursTarget(LiveTarget):
    """Deploy, undo and roll back services whose two colours sit behind one ALB listener; a subclass
    supplies the platform: starting a colour on a release, the image a colour runs, its desired count,
    scaling it, waiting for its healthy targets."""

    kind = "colour"  # what a colour is on the platform, in messages ("ECS service", "Auto Scaling group")
    secrets_how = ""  # how the platform's instances get their secrets, said when the manager cannot serve it
    settings: EcsCluster | Ec2Fleet

    def __init__(self, aws: Aws, redis: Redis, settings: EcsCluster | Ec2Fleet, *, replicas: dict[str, int],
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
        group = self._groups(service, env)[r.colour_of(release)]
        return self._wait(release, group, self.replicas.get(service, 1), timeout or self.settings.rollout_timeout,
                          r.log_group(self.settings, service, env))

    def logs(self, release: Release, lines: int = 50) -> str:
        service, env = self._owner(release)
        return health.logs(self.aws, r.log_group(self.settings, service, env), release, lines)

    def scrape_address(self, release: Release) -> str | None:
        return None  # the judge reads CloudWatch (agents.deploy.targets.ecs.metrics)

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
        listener = r.Listener(self.aws, self.settings.listener, self._groups(plan.service, plan.env),
                              section=self.runtime)
        groups = listener.groups
        colour = 1 - r.colour_of(current) if current else 0
        name = r.service_name(plan.service, plan.env, r.COLOURS[colour])
        prepared = self._prepare(plan, name, secrets)  # what the platform gets; refused here, before any change
        state = state.model_copy(update={"address": state.address or self._address(listener)})
        self._triggered(plan, state, report, where=f"{self.runtime} {state.location}", colour=r.COLOURS[colour])
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
            made = self._start(plan, name, groups[colour], prepared)
            ready_s = self.wait_healthy(new, plan.health)
            report("progress", {"phase": "healthy", "version": plan.version, "replicas": plan.replicas,
                                "seconds": ready_s, **made})
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
        listener = r.Listener(self.aws, self.settings.listener, self._groups(plan.service, plan.env),
                              section=self.runtime)
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

    def _groups(self, service: str, env: str) -> tuple[r.TargetGroup, r.TargetGroup]:
        return r.target_groups(self.aws, self.settings, service, env, section=self.runtime)

    def _secret_arns(self, env: str) -> dict[str, str]:
        """KEY -> the ARN of the Secrets Manager secret ``<secret_prefix><KEY>``; StageFailed naming a missing one."""
        if not self.secret_keys:
            return {}
        if self.secrets_manager != "aws_secrets_manager":
            raise StageFailed(f"secrets.manager is `{self.secrets_manager}`: {self.secrets_how}",
                              hint="set secrets.manager: aws_secrets_manager and store "
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
            listener = r.Listener(self.aws, self.settings.listener, self._groups(state.service, state.env),
                                  section=self.runtime)
        running = self._image(release.container)
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
        if self._desired(release.container) > 0:  # a worker killed before the colour was started
            self._scale(release.container, 0)

    def _take_down(self, state: LiveState) -> None:
        pass  # the listener's weights stay where they are; the new colour is scaled to zero

    def _running(self, release: Release) -> bool:
        return self._desired(release.container) > 0

    def _wind_down(self, release: Release) -> None:
        self._scale(release.container, 0)

    def _owner(self, release: Release) -> tuple[str, str]:
        """(service, env) from the colour's name ``<service>-<env>-<colour>``."""
        service_env = release.container.rsplit("-", 1)[0]
        for env in ENVIRONMENTS:
            if service_env.endswith(f"-{env}"):
                return service_env.removesuffix(f"-{env}"), env
        raise NotFound(f"{release.container} is not an {self.kind} this target made")

    def _address(self, listener: r.Listener) -> str | None:
        found = self.aws.call("elbv2", "describe_load_balancers", LoadBalancerArns=[listener.load_balancer])
        dns = (found.get("LoadBalancers") or [{}])[0].get("DNSName")
        return f"http://{dns}" if dns else None

    def _new_state(self, plan: Plan) -> LiveState:
        return LiveState(service=plan.service, env=plan.env, edge_port=80, edge_prefix="", runtime=self.runtime,
                         location=self._location())

    # -- the platform's hooks -----------------------------------------------------------------------

    def _prepare(self, plan: Plan, name: str, secrets: dict[str, str]) -> Any:
        """What :meth:`_start` sends for ``plan``, checked before anything changes (StageFailed when it cannot)."""
        raise NotImplementedError

    def _start(self, plan: Plan, name: str, group: r.TargetGroup, prepared: Any) -> dict[str, object]:
        """Run the release in the colour ``name`` with ``plan.replicas`` instances; what it made, for the report."""
        raise NotImplementedError

    def _wait(self, release: Release, group: r.TargetGroup, want: int, timeout: float, log_group: str) -> float:
        """Seconds until ``group`` has ``want`` healthy targets of ``release``; StageFailed with a report."""
        raise NotImplementedError

    def _image(self, name: str) -> str | None:
        """The image the colour ``name`` runs (None: the colour does not exist)."""
        raise NotImplementedError

    def _desired(self, name: str) -> int:
        raise NotImplementedError

    def _scale(self, name: str, count: int) -> None:
        raise NotImplementedError
