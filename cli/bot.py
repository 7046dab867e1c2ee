"""`orchestra bot`: the Slack app in socket mode, with the relay that writes run threads."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable

from redis import Redis

from cli.common import connect_waiting
from jobs.queue import stage_queue
from orchestra import health
from orchestra.errors import OrchestraError
from orchestra.settings import Settings
from orchestra.telemetry import metrics_registry, serve_metrics

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bot", help="run the Slack bot (socket mode) and the relay")
    parser.add_argument("--no-relay", action="store_true", help="do not write run threads from this process")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGTERM or Ctrl-C (or giving up), then close the Slack connection and stop the relay."""
    _check(settings)
    redis = connect_waiting(settings, role="bot")
    health.start_probe(redis)
    health.start_watchdog(settings.give_up_s)
    serve_metrics(metrics_registry(redis, queue=stage_queue(redis)), settings.metrics_port,
                  host=settings.metrics_host)
    asyncio.run(_serve_until_signalled(settings, redis, relay=not args.no_relay))
    return health.exit_code()  # 75 when it stopped because it gave up (orchestra.health)


async def _serve_until_signalled(settings: Settings, redis: Redis, *, relay: bool) -> None:
    from bot.slack.process import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stopper(stop, sig))
    await serve(settings, redis, relay=relay, stop=stop)
    logger.info("bot stopped")


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def stopping() -> None:
        logger.info("%s: closing the Slack connection and stopping the relay", sig.name)
        stop.set()
    return stopping


def _check(settings: Settings) -> None:
    has_tokens = bool(settings.slack_bot_token and settings.slack_app_token)
    if settings.slack_bot_token and not settings.slack_app_token:
        raise OrchestraError("SLACK_BOT_TOKEN is set but SLACK_APP_TOKEN is not",
                             hint="socket mode needs the app-level token (xapp-...) too")
    if not has_tokens and "slack.com" in settings.slack_api_url:
        raise OrchestraError("no Slack tokens and SLACK_API_URL points at Slack",
                             hint="set SLACK_BOT_TOKEN and SLACK_APP_TOKEN, or run `orchestra up` (local "
                                  "workspace), or `orchestra slack-server` + SLACK_API_URL=http://127.0.0.1:3300/api/")
