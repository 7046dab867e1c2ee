"""What the always-on watch does with an anomaly: roll back within the guard period, restart after it.

Either way an ``observability_alert`` (kind ``always_on_anomaly``) goes to the release's run thread first,
with the metric, value, threshold, window, versions, the release's age and guard, what is done about it
and a redacted summary of the release's log (:func:`agents.chatops.crashlog.summarize`).

* Within ``observability.guard`` of going live, with an earlier version to go back to and the live state
  as its deploy left it: an automatic rollback (:func:`agents.observability.autorollback.auto_rollback`:
  ``rollback.enabled``, the circuit breaker, retries, the loud ``rollback_failed``), under the service's
  deploy lock, taken here like the watch's rollback takes it (a deploy that holds it wins: nothing is done).
* Otherwise the unhealthy instance is restarted by its deploy target's ``restart`` hook
  (:meth:`agents.deploy.targets.live.LiveTarget.restart`: docker restarts the container, kubernetes does a
  rollout restart of the Deployment, ECS forces a new deployment of the colour's service; each then waits
  until the release serves again) and a second alert says what was done or why it could not be; Lambda
  has no instance to restart, so there the alert is all.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agents.chatops.crashlog import summarize
from agents.deploy.targets.base import DeployTarget
from agents.deploy.targets.registry import Targets
from agents.deploy.targets.state import LiveState
from agents.observability.autorollback import RollbackFacts, auto_rollback
from agents.observability.judge import MetricResult, Verdict, format_value
from agents.observability.policy import Policy
from agents.observability.watch import Breach, WatchedRelease
from orchestra import limits
from orchestra.errors import LockHeld, OrchestraError
from orchestra.events import EventType
from orchestra.locks import Locks
from orchestra.redaction import redact

if TYPE_CHECKING:
    import docker

    from agents.context import AgentContext

logger = logging.getLogger(__name__)

LOCK_OWNER = "always-on watch"
LOG_LINES = 200  # read from the container; the summary keeps the error line and the last few
SHOWN_LINES = 5  # of the summary's tail, in the thread message


def act(ctx: AgentContext, live: LiveState, rel: WatchedRelease, breach: tuple[str, float, float, Breach],
        policy: Policy, *, now: float, client: docker.DockerClient | None = None) -> str:
    """Alert, then roll back or restart; the action taken (rolled_back, restarted, alerted, held)."""
    assert live.current is not None
    metric, value, limit, info = breach
    obs = ctx.config.observability
    age = now - live.current.started_at
    rollback = age < obs.guard and rel.previous_version is not None and live.last_action == "deploy"
    window = now - info.since
    mean = sum(info.values) / len(info.values)
    reason = (f"{metric} stayed above {format_value(metric, limit)} for {window:.0f}s "
              f"(now {format_value(metric, value)}), {_age(age)} after {rel.version} went live")
    numbers = {"metric": metric, "value": value, "mean": mean, "threshold": limit, "window_s": round(window, 1),
               "age_s": round(age, 1), "guard_s": obs.guard}
    targets = Targets(ctx.settings, ctx.redis, ctx.config, rel.env, docker_client=client)
    try:
        target, unusable = _target(targets, live)
        crash = _crash_log(target, live)
        if rollback:
            _alert(ctx, rel, reason, f"within its guard period ({_age(obs.guard)}): rolling back to "
                   f"{rel.previous_version}", "rollback", crash, numbers)
            return _roll_back(ctx, live, rel, reason, window, MetricResult(
                metric, Verdict.FAIL, reason, canary=mean, threshold=limit, samples=(len(info.values), 0)), policy)
        plan = _after_guard(live, age, obs.guard, target, unusable)
        restart = target is not None and target.restartable
        _alert(ctx, rel, reason, plan, "restart" if restart else "alert", crash, numbers)
        if target is None or not restart:
            return "alerted"
        return _restart(ctx, live, target)
    finally:
        targets.close()


def _alert(ctx: AgentContext, rel: WatchedRelease, reason: str, plan: str, action: str,
           crash: dict[str, Any] | None, numbers: dict[str, Any]) -> None:
    ctx.emit(EventType.OBSERVABILITY_ALERT, kind="always_on_anomaly", service=rel.service, env=rel.env,
             version=rel.version, previous_version=rel.previous_version, action=action, crash=crash,
             message=f"always-on watch: {rel.service} {rel.version} in {rel.env}: {reason}; {plan}"
                     f"{_crash_text(crash)}", **numbers)


def _target(targets: Targets, live: LiveState) -> tuple[DeployTarget | None, str | None]:
    """The target serving the release, or why it cannot be opened (its settings, its credentials)."""
    try:
        return targets.for_runtime(live.runtime), None
    except Exception as exc:  # the people hear why nothing was restarted
        logger.warning("could not open the %s target of %s: %s", live.runtime, live.service, exc)
        return None, _first_line(exc)


def _after_guard(live: LiveState, age: float, guard: float, target: DeployTarget | None,
                 unusable: str | None) -> str:
    assert live.current is not None
    if age < guard:  # within the guard, but nothing a rollback could go back to
        why = "it was put back by a rollback" if live.last_action == "rollback" else "there is no earlier version"
        head = f"not rolled back ({why})"
    else:
        head = f"past its guard period ({_age(guard)})"
    name = live.current.container
    if target is None:
        return f"{head}: could not restart {name}: {unusable}; a person must look"
    if target.restartable:
        return f"{head}: restarting {name} ({live.runtime})"
    return f"{head}: {live.runtime} releases have no instance to restart; a person must look"


def _roll_back(ctx: AgentContext, live: LiveState, rel: WatchedRelease, reason: str, window: float,
               result: MetricResult, policy: Policy) -> str:
    """The automatic rollback under the service's deploy lock (a deploy holding it wins: nothing happens)."""
    assert rel.previous_version is not None
    locks = Locks(ctx.redis)
    holder = f"always-on-{rel.service}-{rel.env}"  # not a run: the router's hand-on leaves it to its owner
    try:
        locks.acquire(rel.service, rel.env, owner=LOCK_OWNER, run_id=holder, ttl_s=limits.OBSERVE_LOCK_S)
    except LockHeld as exc:
        ctx.progress(f"not rolling back {rel.service} {rel.version}: {exc.message}; its deploy decides",
                     kind="rollback_skipped", service=rel.service)
        return "alerted"
    targets = Targets(ctx.settings, ctx.redis, ctx.config, rel.env)
    try:
        facts = RollbackFacts(rel.service, rel.env, rel.version, rel.previous_version,
                              f"{reason} (always-on watch)", window, None, None, result)

        def undo() -> None:
            targets.for_service(rel.service).rollback(
                rel.service, rel.env, to_version=rel.previous_version,
                health=ctx.config.service(rel.service).health,
                keep_s=ctx.config.deployment.blue_green.keep_previous, run_id=live.run_id or ctx.run.id)

        done = auto_rollback(ctx, facts, undo, policy)
    finally:
        targets.close()
        locks.release(rel.service, rel.env, run_id=holder)
    return "rolled_back" if done else "held"


def _restart(ctx: AgentContext, live: LiveState, target: DeployTarget) -> str:
    """The target restarts the release and waits until it serves again; the thread hears how it went."""
    assert live.current is not None
    release, health = live.current, ctx.config.service(live.service).health
    said = f"{live.service} {release.version} in {live.env}"
    try:
        done = target.restart(live, release, health)
        message, outcome = f"always-on watch restarted {said}: {done}", "restarted"
    except Exception as exc:  # not found, not back, refused: the people must hear of it
        logger.warning("restart of %s failed: %s", release.container, exc)
        message = (f"RESTART FAILED: could not restart {release.container} ({said}): {_first_line(exc)}; "
                   f"look at it, or `/rollback {live.service} {live.env}`")
        outcome = "alerted"
    ctx.emit(EventType.OBSERVABILITY_ALERT, kind="always_on_restart", service=live.service, env=live.env,
             version=release.version, runtime=live.runtime, instance=release.container,
             restarted=outcome == "restarted", message=message)
    return outcome


def _first_line(exc: Exception) -> str:
    text = exc.message if isinstance(exc, OrchestraError) else str(exc)
    return (redact(text).splitlines() or [type(exc).__name__])[0]


def _crash_log(target: DeployTarget | None, live: LiveState) -> dict[str, Any] | None:
    """The release's log, read where it runs (a container, the pods, CloudWatch), summarised and redacted."""
    if target is None or live.current is None:
        return None
    try:
        summary = summarize(target.logs(live.current, lines=LOG_LINES))
    except Exception as exc:  # no log is no reason not to act on the numbers
        logger.warning("could not read the log of %s: %s", live.current.container, exc)
        return None
    return {"error": summary.error, "tail": summary.tail, "lines": summary.total_lines}


def _crash_text(crash: dict[str, Any] | None) -> str:
    if crash is None:
        return ""
    if not crash["lines"]:
        return "\nlog: empty"
    tail = crash["tail"][-SHOWN_LINES:]
    head = f"error: {crash['error']}" if crash["error"] else "no error line"
    return f"\nlog ({head}; last {len(tail)} of {crash['lines']} lines):\n" + "\n".join(tail)


def _age(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.1f}m" if seconds >= 120 else f"{seconds:.0f}s"
