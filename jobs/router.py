"""The router: reads events and moves runs along the stage graph.

It enqueues the next stage when one passes, parks a run that needs an
approval until the decision arrives, and finishes runs. Every transition is a
compare-and-set on the run record, so a redelivered event changes nothing.
Its periodic tick reaps stages whose worker died and expires approvals.

Events are not authority. A stage's result counts only when it names the job
that owns the stage (the job id, with its attempt, recorded on the run when the
router enqueued it), and a decision moves a parked run only when the approval
record agrees (:func:`jobs.approvals.verify`). Anything else is rejected: logged,
audited and counted (:func:`orchestra.store.rejected_counts`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from agents.deploy import intent
from agents.observability.traffic import WatchTraffic
from jobs import approvals, forks, handoff, lost, timers
from jobs.graph import DEPLOY, PIPELINE, Graph, Stage
from jobs.queue import enqueue_housekeeping, enqueue_stage, stage_queue
from jobs.runner import HEARTBEAT_TTL_S, fail_stage, is_beating
from orchestra import texts
from orchestra.errors import NotFound, OrchestraError
from orchestra.events import Consumer, Event, EventBus, EventType
from orchestra.locks import cancel_requested
from orchestra.loops import keep_going
from orchestra.settings import Settings
from orchestra.store import AUDIT_STREAM, Audit, Run, RunStatus, RunStore, audit_entry, count_rejected

logger = logging.getLogger(__name__)

ROUTER_GROUP = "router"
TICK_S = 1.0
REAP_RELEASES_S = 60.0  # how often releases past their keep window are stopped
UNCONCLUDED_S = 60.0  # a finished stage job whose result has not moved the run by then lost it
RECONCILE_S = 600  # the reconcile job of a deploy whose worker died


def job_id(run_id: str, stage: str, attempt: int = 1) -> str:
    return f"{run_id}_{stage}_{attempt}"


class Router:
    """Moves runs from stage to stage; one of possibly several members of the router group."""

    def __init__(self, redis: Redis, settings: Settings, *, graph: Graph = PIPELINE,
                 name: str | None = None, claim_idle_ms: int = 30_000, unconcluded_s: float = UNCONCLUDED_S) -> None:
        self.redis = redis
        self.settings = settings
        self.graph = graph
        self.bus = EventBus(redis)
        self.store = RunStore(redis)
        self.queue = stage_queue(redis)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_idle_ms = claim_idle_ms
        self.unconcluded_s = unconcluded_s
        self.watch_traffic = WatchTraffic(redis, self.name)

    def run(self, stop: threading.Event) -> None:
        """Handle events and tick until ``stop`` is set."""
        consumers: list[Consumer] = []  # made in the first step that reaches Redis
        last = {"tick": 0.0, "reap": 0.0}

        def step() -> None:
            if not consumers:
                consumers.append(Consumer(self.bus, ROUTER_GROUP, self.name, claim_idle_ms=self.claim_idle_ms))
            consumer = consumers[0]
            try:
                deliveries = consumer.read(block_ms=int(TICK_S * 500))
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # a Redis that lost its data: the group is made again
                    consumers.clear()
                raise
            for delivery in deliveries:
                try:
                    self.handle(delivery.event)
                except Exception:  # left pending: re-claimed later, dead-lettered if it keeps failing
                    logger.exception("run %s: router failed on %s", delivery.event.run_id,
                                     delivery.event.type)
                    continue
                consumer.ack(delivery)
            if time.monotonic() - last["tick"] >= TICK_S:
                last["tick"] = time.monotonic()
                self.tick()
            if time.monotonic() - last["reap"] >= REAP_RELEASES_S:
                last["reap"] = time.monotonic()
                self._reap_releases()

        try:
            keep_going("router", step, stop)
        finally:
            self.watch_traffic.close()

    def handle(self, event: Event) -> None:
        """Apply one event to its run."""
        stage = self.graph.concluded(event)
        if stage is not None:
            self._on_result(event, stage)
        elif event.type == EventType.STAGE_FAILED:
            self._on_failure(event)
        elif event.type == EventType.APPROVAL_GRANTED:
            self._resume(event)
        elif event.type in (EventType.APPROVAL_REJECTED, EventType.APPROVAL_EXPIRED):
            self._decline(event)
        elif event.type == EventType.RUN_CANCELLED:
            self._finish(event.run_id, RunStatus.CANCELLED, f"cancelled by {event.actor}", wait_for_stage=True)

    def start(self, run: Run) -> None:
        """Enqueue the first stage of a new run (dispatch calls this)."""
        first = self.graph.first(run)
        if first is None:
            self._finish(run.id, RunStatus.FAILED, f"no stage of the pipeline applies to a {run.kind} run")
            return
        self._enqueue(run, first)

    def tick(self) -> None:
        """Fire due timers; reap stages whose worker died; expire approvals past their deadline."""
        try:
            timers.fire_due(self.redis, self.queue, self.graph)
        except Exception:
            logger.exception("router: could not fire the due timers")
        try:
            handoff.tend(self.redis, self.start, self._job)
        except Exception:
            logger.exception("router: could not tend the deploy locks")
        watching: list[str] = []
        deploying: list[str] = []  # a paced canary's pause gets its demo traffic from here too
        for run in self.store.active():
            if run.status == RunStatus.RUNNING and run.stage == "observe":
                watching.append(run.id)
            elif run.status == RunStatus.RUNNING and run.stage == "deploy":
                deploying.append(run.id)
            try:
                if run.status == RunStatus.RUNNING and run.stage:
                    self._reap(run)
                elif run.status == RunStatus.AWAITING_APPROVAL:
                    approvals.expire_if_due(self.redis, run.id)
            except Exception:
                logger.exception("run %s: router tick failed", run.id)
        try:
            self.watch_traffic.sync(watching, deploying)
        except Exception:
            logger.exception("router: could not keep the watched releases' and paused canaries' demo traffic going")

    def _reap_releases(self) -> None:
        """Have a worker stop previous releases whose blue-green keep window is over (one job at a time)."""
        try:
            enqueue_housekeeping(stage_queue(self.redis), "jobs.tasks.stop_expired_releases")
        except Exception:
            logger.exception("could not enqueue the clean-up of expired releases")

    def _on_result(self, event: Event, stage: Stage) -> None:
        run = self.store.get(event.run_id)
        if run.status.finished or run.stage != stage.name:
            logger.debug("run %s: stale %s ignored", run.id, event.type)
            return
        refused = self._not_owner(run, event, stage)
        if refused is not None:
            self._reject(event, refused)
            return
        if not event.data.get("passed"):
            self._finish(run.id, RunStatus.FAILED, event.data.get("summary") or f"{stage.name} failed")
            return
        if (by := cancel_requested(self.redis, run.id)) is not None:  # it finished before it saw the cancel
            self._finish(run.id, RunStatus.CANCELLED, texts.CANCELLED_AFTER_DEPLOY.format(
                by=by, services=", ".join(run.services), env=run.env))
            return
        if run.nothing_to_do:  # the risk route found nothing to build (agents/analysis/route.py)
            self._finish(run.id, RunStatus.SUCCEEDED, run.nothing_to_do)
            return
        nxt = self.graph.after(stage.name, run)
        if nxt is None:
            self._finish(run.id, RunStatus.SUCCEEDED, "all stages passed")
            return
        if forks.is_fork(run) and forks.runs_code(nxt.name):  # a fork's code runs once a collaborator says so
            self._park(run, nxt, lambda parked: forks.park(self.redis, parked, nxt.name))
            return
        try:
            gated = nxt.approval and not self._approved_earlier(run)  # one approval per run: migrate's covers deploy
            env_policy = approvals.environment_policy(run, self.settings) if gated else None
        except OrchestraError as exc:  # the trusted policy cannot be read: nothing goes further
            self._finish(run.id, RunStatus.FAILED, f"the trusted policy could not be read: {exc}")
            return
        if env_policy is not None and (env_policy.approval_required or run.risk_approval or nxt.asks):  # the risk
            gate = env_policy  # route's approval and a stage that always asks (iac_apply) are the env's approvers'
            said = " ".join(m for m in (nxt.asks(run) if nxt.asks else "", run.risk_approval or "") if m)
            self._park(run, nxt, lambda parked: approvals.request(self.redis, parked, nxt.name, gate,
                                                                  timeout_s=gate.approval_timeout, message=said))
        else:
            self._enqueue(run, nxt)

    def _approved_earlier(self, run: Run) -> bool:
        """Whether an approver already let this run (at this commit) through a gated stage, e.g. migrate."""
        try:
            req = approvals.get(self.redis, run.id)
        except NotFound:
            return False
        return req.gate == "environment" and req.decision == "approved" and req.commit == run.commit

    def _not_owner(self, run: Run, event: Event, stage: Stage) -> str | None:
        """Why ``event`` is not the result of the job that owns ``stage`` now; None when it is."""
        if run.status != RunStatus.RUNNING or not run.job_id:
            return f"no job owns {stage.name} while the run is {run.status.value}"
        if event.data.get("job_id") != run.job_id:
            return f"the result names job {event.data.get('job_id')}, but {run.job_id} owns {stage.name}"
        job = self._job(run)
        if job is None or job.get_status() not in (JobStatus.STARTED, JobStatus.FINISHED):
            return f"job {run.job_id} has not run (it is {job.get_status().value if job else 'gone'})"
        return None

    def _on_failure(self, event: Event) -> None:
        run = self.store.get(event.run_id)
        if run.status.finished:
            return
        if event.data.get("stage") != run.stage or event.data.get("job_id") != run.job_id:
            self._reject(event, f"the failure does not come from the job that owns {run.stage}")
            return
        self._finish(run.id, RunStatus.FAILED, event.data.get("reason", "a stage failed"))

    def _park(self, run: Run, stage: Stage, ask: Callable[[Run], object]) -> None:
        """Stop ``run`` before ``stage`` (no job owns anything while parked) and ``ask`` for the decision."""
        parked = self.store.update(run.id, expect=lambda r: r.stage == run.stage and r.job_id == run.job_id
                                   and not r.status.finished, status=RunStatus.AWAITING_APPROVAL,
                                   stage=stage.name, job_id=None)
        if parked is not None:
            ask(parked)

    def _resume(self, event: Event) -> None:
        run = self.store.get(event.run_id)
        if run.status != RunStatus.AWAITING_APPROVAL or run.stage != event.data.get("stage"):
            logger.debug("run %s: stale %s ignored", run.id, event.type)
            return
        refused = approvals.verify(self.redis, run, run.stage or "", event)
        if refused is not None:
            self._reject(event, refused)
            return
        self._enqueue(run, self.graph.stage(run.stage or ""))

    def _decline(self, event: Event) -> None:
        run = self.store.get(event.run_id)
        if run.status != RunStatus.AWAITING_APPROVAL:
            return
        refused = approvals.verify(self.redis, run, run.stage or "", event)
        if refused is not None:
            self._reject(event, refused)
            return
        verdict = "expired" if event.type == EventType.APPROVAL_EXPIRED else \
            f"rejected by {event.data.get('decided_by')}"
        self._finish(run.id, RunStatus.REJECTED, f"approval {verdict}")

    def _enqueue(self, run: Run, stage: Stage) -> None:
        """Move ``run`` (as read) to ``stage`` under a new job; nothing happens if it moved meanwhile."""
        attempt = run.attempt + 1
        moved = self.store.update(run.id, expect=lambda r: r.stage == run.stage and r.attempt == run.attempt
                                  and r.status == run.status, stage=stage.name, status=RunStatus.RUNNING,
                                  attempt=attempt, job_id=job_id(run.id, stage.name, attempt))
        if moved is not None:
            self._submit(moved, stage)

    def _submit(self, run: Run, stage: Stage) -> None:
        enqueue_stage(self.queue, run.id, stage, job_id=run.job_id or job_id(run.id, stage.name, run.attempt))
        logger.info("run %s: enqueued %s as %s", run.id, stage.name, run.job_id)

    def _reject(self, event: Event, reason: str) -> None:
        """Refuse to act on ``event``: a warning, an audit entry and a count, so a forgery is seen."""
        logger.warning("run %s: rejected %s (entry %s, actor %s): %s", event.run_id, event.type, event.id,
                       event.actor, reason)
        count_rejected(self.redis, event.type.value)
        Audit(self.redis).record("event_rejected", actor=event.actor, run_id=event.run_id, type=event.type.value,
                                 entry=event.id, reason=reason)

    def _finish(self, run_id: str, status: RunStatus, reason: str, *, wait_for_stage: bool = False) -> None:
        """End the run; its locks go to the next queued runs, which start. ``wait_for_stage`` (a cancel):
        a run moving traffic is left to stop, roll back and end on its own."""
        if wait_for_stage and handoff.stops_itself(self.redis, self.store.get(run_id), self._job):
            logger.info("run %s: cancel asked; it rolls back before it ends", run_id)
            return
        if wait_for_stage and self._paused_deploy(run_id):
            logger.info("run %s: cancel asked in a canary pause; its check rolls back now, then it ends", run_id)
            return
        status, reason = handoff.as_cancelled(self.redis, run_id, status, reason)

        def recorded(pipe: Pipeline, run: Run) -> None:  # the finish, its event and its audit entry: one step
            self.bus.publish_in(pipe, Event(run_id=run.id, type=EventType.RUN_FINISHED, actor="orchestra", data={
                "status": status.value, "reason": reason, "stage": run.stage,
                "duration_s": round((run.finished_at or time.time()) - run.created_at, 3)}))
            pipe.xadd(AUDIT_STREAM, audit_entry("run_finished", actor="orchestra", run_id=run.id,
                                                status=status.value, reason=reason))

        run = self.store.update(run_id, expect=lambda r: not r.status.finished, also=recorded, status=status,
                                reason=reason)
        if run is None:
            return
        self._cancel_queued(run)
        handoff.release(self.redis, run, start=self.start)

    def _paused_deploy(self, run_id: str) -> bool:
        """Whether ``run_id`` is a deploy whose canary pauses in scheduled checks; if so its check is fired now
        (it sees the cancel, rolls back and ends the run)."""
        run = self.store.get(run_id)
        if run.status != RunStatus.RUNNING or run.stage != DEPLOY.name \
                or not timers.pending(self.redis, run.id, DEPLOY.name):
            return False
        timers.schedule(self.redis, DEPLOY.name, run.id, after_s=0)
        return True

    def _cancel_queued(self, run: Run) -> None:
        job = self._job(run)
        if job is not None and job.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.cancel()

    def _reap(self, run: Run) -> None:
        job = self._job(run)
        if job is None:
            if time.time() - run.updated_at > 10:  # lost between the transition and the enqueue
                self._submit(run, self._reconciling(run) or self.graph.stage(run.stage or ""))
            return
        status = job.get_status()
        if status == JobStatus.QUEUED:  # in no queue after its worker died taking it, or a failover: put back
            lost.requeue_if_lost(self.redis, self.queue, job, run.id, run.stage or "")
            return
        started = job.started_at.timestamp() if job.started_at else time.time()
        ended = job.ended_at.timestamp() if job.ended_at else time.time()
        if status == JobStatus.FINISHED and time.time() - ended > self.unconcluded_s \
                and not timers.pending(self.redis, run.id, run.stage or "") and not self._concluded(run, job):
            fail_stage(self.redis, run.id, run.stage or "", job_id=job.id, key=f"{job.id}@unconcluded",
                       reason=f"{run.stage} ended without a result and nothing is scheduled to conclude it")
            return
        if status == JobStatus.STARTED and not is_beating(self.redis, run.id) \
                and time.time() - started > 2 * HEARTBEAT_TTL_S:
            if self._reconcile_instead(run, job):  # traffic left mid-way: put back first
                return
            fail_stage(self.redis, run.id, run.stage or "", job_id=job.id, key=f"{job.id}@{started}",
                       reason=f"the worker running {run.stage} stopped in the middle of it "
                              "(killed or crashed); nothing was retried")
        elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED) \
                and not self._reconcile_instead(run, job):  # a killed work horse left traffic mid-way
            fail_stage(self.redis, run.id, run.stage or "", job_id=job.id, key=job.id,
                       reason=f"the {run.stage} job ended as {status.value}")

    def _reconciling(self, run: Run) -> Stage | None:
        """The deploy stage run by the reconciler (:mod:`agents.deploy.reconcile`) when ``run``'s deploy left
        intents behind; None otherwise."""
        if run.stage != DEPLOY.name or not intent.of_run(self.redis, run.id):
            return None
        return replace(self.graph.stage(DEPLOY.name), func="jobs.tasks.reconcile", timeout=RECONCILE_S)

    def _reconcile_instead(self, run: Run, job: Job) -> bool:
        """Give the stage a reconcile job when its worker or work horse died with intents left (a reconcile
        that failed on its own, not killed, is not run again: its failure ends the run)."""
        reconciling = self._reconciling(run)
        if reconciling is None:
            return False
        if job.func_name == reconciling.func and job.get_status() == JobStatus.FAILED:
            result = job.latest_result()
            if "Work-horse terminated" not in str(result.exc_string if result else ""):
                return False
        self._enqueue(run, reconciling)
        return True

    def _concluded(self, run: Run, job: Job) -> bool:
        """Whether the stream holds ``job``'s result for the run's stage (not yet handled)."""
        return any(e.data.get("job_id") == job.id and e.data.get("stage") == run.stage and "passed" in e.data
                   for e in self.bus.replay(run.id))

    def _job(self, run: Run) -> Job | None:
        if not run.job_id:
            return None
        try:
            return Job.fetch(run.job_id, connection=self.redis, serializer=JSONSerializer)
        except (NoSuchJobError, ValueError):  # gone, or an id RQ does not accept
            return None


def start_run(redis: Redis, settings: Settings, run: Run, *, graph: Graph = PIPELINE) -> None:
    """Enqueue the first stage of ``run``; raises OrchestraError when nothing applies."""
    if graph.first(run) is None:
        raise OrchestraError(f"nothing in the pipeline runs for a {run.kind} request yet")
    router = Router(redis, settings, graph=graph)
    try:
        router.start(run)
    except Exception as exc:
        router._finish(run.id, RunStatus.FAILED, f"could not enqueue the first stage: {exc}")
        raise
