"""`orchestra worker`: an RQ worker for the stage queue, with a router beside it."""
from __future__ import annotations

import argparse
import logging
import threading

from rq import Worker
from rq.serializers import JSONSerializer

from cli.common import connect
from jobs import runner
from jobs.queue import stage_queue
from jobs.router import Router
from orchestra.settings import Settings
from orchestra.telemetry import metrics_registry, serve_metrics

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run stage jobs (an RQ worker) and the router")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--no-router", action="store_true", help="do not run a router in this process")
    parser.add_argument("--name", help="worker name (default: RQ's)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = connect(settings, role="worker")
    if settings.sandbox == "none":
        logger.warning("ORCHESTRA_SANDBOX=none: services' installs and tests run on this host, beside this "
                       "worker's credentials; leave it unset (a container per run) unless you trust every pusher")
    runner.configure(settings)
    if not args.burst:  # a burst worker is gone before anyone scrapes it
        serve_metrics(metrics_registry(redis, queue=stage_queue(redis)), settings.metrics_port + 1,
                      host=settings.metrics_host)
    stop = threading.Event()
    router = None
    if not args.no_router:
        router = threading.Thread(target=Router(redis, settings).run, args=(stop,), name="router", daemon=True)
        router.start()
    try:
        worker = Worker([stage_queue(redis)], connection=redis, serializer=JSONSerializer, name=args.name)
        worker.work(burst=args.burst, with_scheduler=not args.burst, logging_level="WARNING")
    finally:
        stop.set()
        if router is not None:
            router.join(timeout=5)
    return 0
