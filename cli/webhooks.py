"""`orchestra webhooks [--host H] [--port P]`: receive GitHub deliveries and reply on pull requests.

One process runs the webhook receiver (POST /github/webhook) and, unless
``--no-relay``, the GitHub relay that keeps PR comments and commit statuses current.
Its metrics are at GET /metrics on the same address, its health at GET /healthz.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cli.common import connect_waiting
from jobs.queue import stage_queue
from orchestra import health
from orchestra.settings import Settings
from orchestra.telemetry import metrics_registry

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "webhooks", help="receive GitHub webhooks at POST /github/webhook and reply on pull requests",
        description="Serve GitHub deliveries (push, pull_request, issue_comment) at POST /github/webhook. "
                    "Needs GITHUB_WEBHOOK_SECRET (or ORCHESTRA_DEV=1 to accept unsigned deliveries); "
                    "GITHUB_TOKEN for replies, statuses and permission checks.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--no-relay", action="store_true",
                        help="do not run the PR comment / commit status relay in this process")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted (or giving up: exit code 75)."""
    from bot.github.receiver import WEBHOOK_PATH, build_webhook_app, check_secret

    check_secret(settings)
    redis = connect_waiting(settings, role="webhooks")
    app = build_webhook_app(settings, redis=redis)  # raises without a secret outside dev mode
    if not settings.github_webhook_secret:
        logger.warning("dev mode: accepting UNSIGNED GitHub deliveries")
    if not settings.github_token:
        logger.warning("GITHUB_TOKEN is not set: replies and statuses will fail on private repositories")
    if not args.no_relay:
        app.cleanup_ctx.append(_relay(settings))
    app.router.add_get("/metrics", _metrics(metrics_registry(redis, queue=stage_queue(redis))))
    health.start_probe(redis)
    health.start_watchdog(settings.give_up_s)
    print(f"orchestra webhooks: listening on http://{args.host}:{args.port}{WEBHOOK_PATH}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return health.exit_code()  # 75 when it stopped because it gave up (orchestra.health)


def _metrics(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)  # the collector reads Redis
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
    return metrics


def _relay(settings: Settings) -> Any:
    async def ctx(app: web.Application) -> Any:
        from bot.github.relay import run_relay

        stop = threading.Event()
        task = asyncio.create_task(run_relay(settings, stop=stop))
        yield
        stop.set()
        await asyncio.wait([task], timeout=10)
    return ctx
