"""`orchestra run`: run the pipeline for a repository through the real queue and follow it.

Prints the run id first, then each event as it happens; exits non-zero when
the run does not succeed. With no worker running it routes and works itself
(a router thread here and burst workers as jobs appear).
"""
from __future__ import annotations

import argparse
import getpass
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis

from cli.common import connect, run_events
from cli.render import line
from jobs.dispatch import dispatch
from jobs.queue import live_workers, stage_queue
from jobs.router import Router
from orchestra.config import canonical_env
from orchestra.events import EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the pipeline for a repository and follow it")
    parser.add_argument("--repo", required=True, help="path or git URL of a repository")
    parser.add_argument("--service", help="one service (default: all, in depends_on order)")
    parser.add_argument("--env", default="staging", help="environment (production, staging, development)")
    parser.add_argument("--ref", help="branch, tag or commit to check out (git repositories)")
    parser.add_argument("--strategy", choices=("blue-green", "canary", "rolling"))
    parser.add_argument("--user", default=getpass.getuser(), help="who asks (default: you)")
    parser.add_argument("--validate-only", action="store_true", help="pre-merge checks only, no deploy")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = connect(settings)
    repo = args.repo if "://" in args.repo else str(Path(args.repo).resolve())
    intent = Intent(kind=IntentKind.VALIDATE if args.validate_only else IntentKind.DEPLOY, service=args.service,
                    ref=args.ref, env=canonical_env(args.env), strategy=args.strategy, user=args.user,
                    source="cli", text=" ".join(sys.argv[1:]))
    with local_runtime(redis, settings, needed=not live_workers(redis)):
        started = dispatch(intent, redis=redis, settings=settings, repo=repo)
        print(f"run {started.id}", flush=True)
        status = None
        for event in run_events(redis, started.id, follow=True):
            print(line(event), flush=True)
            if event.type == EventType.RUN_FINISHED:
                status = event.data.get("status")
    return 0 if status == "succeeded" else 1


@contextmanager
def local_runtime(redis: Redis, settings: Settings, *, needed: bool) -> Iterator[None]:
    """When no worker is running: a router thread here, and a burst worker whenever jobs wait."""
    if not needed:
        yield
        return
    stop = threading.Event()
    threads = [threading.Thread(target=Router(redis, settings).run, args=(stop,), daemon=True),
               threading.Thread(target=_spawn_workers, args=(redis, stop), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


def _spawn_workers(redis: Redis, stop: threading.Event) -> None:
    queue = stage_queue(redis)
    worker: subprocess.Popen[bytes] | None = None
    while not stop.wait(0.1):
        if queue.count and (worker is None or worker.poll() is not None):
            worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--burst", "--no-router"])
    if worker is not None and worker.poll() is None:
        worker.wait(timeout=60)
