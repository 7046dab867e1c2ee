"""`orchestra bot`: the Slack app in socket mode, with the relay that writes run threads."""
from __future__ import annotations

import argparse
import asyncio

from cli.common import connect
from jobs.queue import stage_queue
from orchestra.errors import OrchestraError
from orchestra.settings import Settings
from orchestra.telemetry import metrics_registry, serve_metrics


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bot", help="run the Slack bot (socket mode) and the relay")
    parser.add_argument("--no-relay", action="store_true", help="do not write run threads from this process")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted."""
    from bot.slack.process import serve

    _check(settings)
    redis = connect(settings, role="bot")
    serve_metrics(metrics_registry(redis, queue=stage_queue(redis)), settings.metrics_port,
                  host=settings.metrics_host)
    asyncio.run(serve(settings, redis, relay=not args.no_relay))
    return 0


def _check(settings: Settings) -> None:
    has_tokens = bool(settings.slack_bot_token and settings.slack_app_token)
    if settings.slack_bot_token and not settings.slack_app_token:
        raise OrchestraError("SLACK_BOT_TOKEN is set but SLACK_APP_TOKEN is not",
                             hint="socket mode needs the app-level token (xapp-...) too")
    if not has_tokens and "slack.com" in settings.slack_api_url:
        raise OrchestraError("no Slack tokens and SLACK_API_URL points at Slack",
                             hint="set SLACK_BOT_TOKEN and SLACK_APP_TOKEN, or run `orchestra up` (local "
                                  "workspace), or `orchestra slack-server` + SLACK_API_URL=http://127.0.0.1:3300/api/")
