"""The router: reads events and moves runs along the stage graph.

It enqueues the next stage when one passes, parks a run that needs an
approval until the decision arrives, and finishes runs. Every transition is a
compare-and-set on the run record, so a redelivered event changes nothing.
Its periodic tick reaps stages whose worker died and expires approvals.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import approvals
from jobs.graph import PIPELINE, Graph, Stage
from jobs.queue import enqueue_housekeeping, enqueue_stage, stage_queue
from jobs.runner import HEARTBEAT_TTL_S, fail_stage, is_beating
from orchestra.config import EnvironmentPolicy
from orchestra.errors import OrchestraError
from orchestra.events import Consumer, Event, EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Audit, Locks, Run, RunStatus, RunStore

logger = logging.getLogger(__name__)

ROUTER_GROUP = "router"
TICK_S = 1.0
REAP_RELEASES_S = 60.0  # how often releases past their keep window are stopped


def job_id(run_id: str, stage: str) -> str:
    return f"{run_id}_{stage}"


class Router:
    """Moves runs from stage to stage; one of possibly several members of the router group."""

    def __init__(self, redis: Redis, settings: Settings, *, graph: Graph = PIPELINE,
                 name: str | None = None, claim_idle_ms: int = 30_000) -> None:
        self.redis = redis
        self.settings = settings
        self.graph = graph
        self.bus = EventBus(redis)
        self.store = RunStore(redis)
        self.queue = stage_queue(redis)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_idle_ms = claim_idle_ms

    def run(self, stop: threading.Event) -> None:
        """Handle events and tick until ``stop`` is set."""
        consumer = Consumer(self.bus, ROUTER_GROUP, self.name, claim_idle_ms=self.claim_idle_ms)
        last_tick = last_reap = 0.0
        while not stop.is_set():
            for delivery in consumer.read(block_ms=int(TICK_S * 500)):
                try:
                    self.handle(delivery.event)
                except Exception:
                    logger.exception("run %s: router failed on %s", delivery.event.run_id,
                                     delivery.event.type)
                    continue
                consumer.ack(delivery)
            if time.monotonic() - last_tick >= TICK_S:
                last_tick = time.monotonic()
                self.tick()
            if time.monotonic() - last_reap >= REAP_RELEASES_S:
                last_reap = time.monotonic()
                self._reap_releases()

    def handle(self, event: Event) -> None:
        """Apply one event to its run."""
        stage = self.graph.concluded(event)
        if stage is not None:
            self._on_result(event, stage)
        elif event.type == EventType.STAGE_FAILED:
            self._finish(event.run_id, RunStatus.FAILED, event.data.get("reason", "a stage failed"))
        elif event.type == EventType.APPROVAL_GRANTED:
            self._resume(event)
        elif event.type in (EventType.APPROVAL_REJECTED, EventType.APPROVAL_EXPIRED):
            verdict = "expired" if event.type == EventType.APPROVAL_EXPIRED else \
                f"rejected by {event.data.get('decided_by')}"
            self._finish(event.run_id, RunStatus.REJECTED, f"approval {verdict}")
        elif event.type == EventType.RUN_CANCELLED:
            self._finish(event.run_id, RunStatus.CANCELLED, f"cancelled by {event.actor}")

    def start(self, run: Run) -> None:
        """Enqueue the first stage of a new run (dispatch calls this)."""
        first = self.graph.first(run)
        if first is None:
            self._finish(run.id, RunStatus.FAILED, f"no stage of the pipeline applies to a {run.kind} run")
            return
        self._enqueue(run.id, first, expect_stage=None)

    def tick(self) -> None:
        """Reap stages whose worker died; expire approvals past their deadline."""
        for run in self.store.active():
            try:
                if run.status == RunStatus.RUNNING and run.stage:
                    self._reap(run)
                elif run.status == RunStatus.AWAITING_APPROVAL:
                    approvals.expire_if_due(self.redis, run.id)
            except Exception:
                logger.exception("run %s: router tick failed", run.id)

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
        if not event.data.get("passed"):
            self._finish(run.id, RunStatus.FAILED, event.data.get("summary") or f"{stage.name} failed")
            return
        nxt = self.graph.after(stage.name, run)
        if nxt is None:
            self._finish(run.id, RunStatus.SUCCEEDED, "all stages passed")
            return
        env_policy = approvals.environment_policy(run, self.settings) if nxt.approval else None
        if env_policy is not None and env_policy.approval_required:
            self._park(run, nxt, env_policy)
        else:
            self._enqueue(run.id, nxt, expect_stage=stage.name)

    def _park(self, run: Run, stage: Stage, env_policy: EnvironmentPolicy) -> None:
        parked = self.store.update(run.id, expect=lambda r: r.stage == run.stage and not r.status.finished,
                                   status=RunStatus.AWAITING_APPROVAL, stage=stage.name)
        if parked is not None:
            approvals.request(self.redis, parked, stage.name, env_policy, timeout_s=env_policy.approval_timeout)

    def _resume(self, event: Event) -> None:
        stage = self.graph.stage(event.data["stage"])
        resumed = self.store.update(event.run_id, expect=lambda r: r.status == RunStatus.AWAITING_APPROVAL
                                    and r.stage == stage.name, status=RunStatus.RUNNING)
        if resumed is not None:
            self._submit(resumed.id, stage)

    def _enqueue(self, run_id: str, stage: Stage, *, expect_stage: str | None) -> None:
        moved = self.store.update(run_id, expect=lambda r: r.stage == expect_stage and not r.status.finished,
                                  stage=stage.name, status=RunStatus.RUNNING,
                                  job_id=job_id(run_id, stage.name))
        if moved is not None:
            self._submit(run_id, stage)

    def _submit(self, run_id: str, stage: Stage) -> None:
        enqueue_stage(self.queue, run_id, stage, job_id=job_id(run_id, stage.name))
        logger.info("run %s: enqueued %s", run_id, stage.name)

    def _finish(self, run_id: str, status: RunStatus, reason: str) -> None:
        run = self.store.update(run_id, expect=lambda r: not r.status.finished, status=status, reason=reason)
        if run is None:
            return
        for service in run.services:
            Locks(self.redis).release(service, run.env, run_id=run.id)
        self._cancel_queued(run)
        self.bus.emit(run.id, EventType.RUN_FINISHED, "orchestra", status=status.value, reason=reason,
                      stage=run.stage, duration_s=round((run.finished_at or time.time()) - run.created_at, 3))
        Audit(self.redis).record("run_finished", actor="orchestra", run_id=run.id, status=status.value,
                                 reason=reason)

    def _cancel_queued(self, run: Run) -> None:
        job = self._job(run)
        if job is not None and job.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.cancel()

    def _reap(self, run: Run) -> None:
        job = self._job(run)
        if job is None:
            if time.time() - run.updated_at > 10:  # lost between the transition and the enqueue
                self._submit(run.id, self.graph.stage(run.stage or ""))
            return
        status = job.get_status()
        started = job.started_at.timestamp() if job.started_at else time.time()
        if status == JobStatus.STARTED and not is_beating(self.redis, run.id) \
                and time.time() - started > 2 * HEARTBEAT_TTL_S:
            fail_stage(self.redis, run.id, run.stage or "", key=f"{job.id}@{started}",
                       reason=f"the worker running {run.stage} stopped in the middle of it "
                              "(killed or crashed); nothing was retried")
        elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            fail_stage(self.redis, run.id, run.stage or "", key=job.id,
                       reason=f"the {run.stage} job ended as {status.value}")

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
