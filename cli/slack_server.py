"""`orchestra slack-server`: the local Slack workspace (Web API + socket mode) on loopback."""
from __future__ import annotations

import argparse
import asyncio
import logging

from orchestra.settings import Settings

logger = logging.getLogger(__name__)
DEFAULT_PORT = 3300


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("slack-server", help="run the local Slack workspace for tests and local use")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    parser.add_argument("--ack-timeout", type=float, default=3.0, help="seconds the app has to ack (Slack: 3)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted."""
    asyncio.run(_serve(args.port, args.ack_timeout))
    return 0


async def _serve(port: int, ack_timeout: float) -> None:
    from bot.localslack import start

    running = await start("127.0.0.1", port, ack_timeout=ack_timeout)
    print(f"local Slack workspace on {running.url} (Web API {running.api_url}, tokens xoxb-local / xapp-local)",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await running.runner.cleanup()
