"""`orchestra worker`: an RQ worker for the stage queue, with a router beside it."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from types import FrameType

from redis import Redis, RedisError
from rq import Worker
from rq.serializers import JSONSerializer

from agents.deploy import reconcile
from cli.common import connect, connect_waiting
from jobs import runner
from jobs.queue import stage_queue
from jobs.router import Router
from orchestra import health
from orchestra.settings import Settings
from orchestra.telemetry import metrics_registry, serve_metrics

logger = logging.getLogger(__name__)

RESTART_PAUSE_S = 0.5
LONGEST_PAUSE_S = 60.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run stage jobs (an RQ worker) and the router")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--no-router", action="store_true", help="do not run a router in this process")
    parser.add_argument("--name", help="worker name (default: RQ's)")
    parser.add_argument("--worker-ttl", type=int, default=None, metavar="SECONDS",
                        help="how long a worker that stopped answering stays registered, and how long one "
                             "Redis call may hang before the worker reconnects (default: RQ's 420)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = connect(settings, role="worker") if args.burst else connect_waiting(settings, role="worker")
    if settings.sandbox == "none":
        logger.warning("ORCHESTRA_SANDBOX=none: services' installs and tests run on this host, beside this "
                       "worker's credentials; leave it unset (a container per run) unless you trust every pusher")
    runner.configure(settings)
    _reconcile_leftovers(settings, redis)
    if not args.burst:  # a burst worker is gone before anyone scrapes it
        health.start_probe(redis)
        health.start_watchdog(settings.give_up_s)
        serve_metrics(metrics_registry(redis, queue=stage_queue(redis)), settings.metrics_port + 1,
                      host=settings.metrics_host)
    stop = threading.Event()
    router = None
    if not args.no_router:
        router = threading.Thread(target=Router(redis, settings).run, args=(stop,), name="router", daemon=True)
        router.start()
    try:
        _work(args, redis)
    finally:
        stop.set()
        if router is not None:
            router.join(timeout=5)
    return health.exit_code()


def _reconcile_leftovers(settings: Settings, redis: Redis) -> None:
    """Put back what deploys of runs that have ended left mid-way (everything was down when they died)."""
    try:
        done = reconcile.leftovers(settings, redis)
    except Exception:  # a worker without a Docker engine, Redis away: the next start, or deploy, does it
        logger.exception("could not reconcile the deploys left mid-way")
        return
    for what in done:
        logger.warning("put back an interrupted deploy: %s", what)


class _Worker(Worker):
    """RQ's worker, remembering whether its loop ended because a stop was asked for (a signal).

    RQ installs its signal handlers only after it has registered and started its scheduler: a SIGTERM
    in between (systemd stopping a worker that is just starting) would kill it unregistered. Until
    then a signal is only noted, and the loop stops at its first turn."""

    stop_asked = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._noted)

    def _noted(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.stop_asked:  # asked before RQ listened: the loop ends before taking a job
            self._stop_requested = True

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)


def _work(args: argparse.Namespace, redis: Redis) -> None:
    """Work until a stop is asked for (or the queue is empty with --burst).

    RQ's loop ends on a Redis timeout or a dropped connection ("quitting..."); this worker starts it
    again after a pause that doubles up to a minute, so a Redis restart or a slow moment never
    takes a worker away.
    """
    pause, old = RESTART_PAUSE_S, None
    while True:
        started, worker = time.monotonic(), None
        try:  # with Redis away (a restart, a failover) each of these raises: the loop starts again
            if old is not None:  # marked dead first, so that a worker of the same name can register
                old.register_death()
                old = None
            worker = _Worker([stage_queue(redis)], connection=redis, serializer=JSONSerializer, name=args.name,
                             worker_ttl=args.worker_ttl)  # RQ names its connection here: Redis is asked
            worker.work(burst=args.burst, with_scheduler=not args.burst, logging_level="WARNING")
        except RedisError as exc:
            if args.burst and worker is None:
                raise
            logger.warning("Redis: %s", exc)
        if args.burst or (worker is not None and worker.stop_asked) or health.gave_up():
            return
        pause = RESTART_PAUSE_S if time.monotonic() - started > LONGEST_PAUSE_S else min(pause * 2, LONGEST_PAUSE_S)
        logger.warning("the worker's loop ended without a stop request (Redis unreachable?); working again in %g s",
                       pause)
        if _stopped_within(pause):
            return
        old = worker or old


def _stopped_within(seconds: float) -> bool:
    """Wait ``seconds``; True when SIGTERM or SIGINT came meanwhile (RQ's handlers need Redis)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    return stop.wait(seconds)
