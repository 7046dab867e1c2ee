"""The bot process: the Bolt app over socket mode, and the relay beside it in a thread."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading

from redis import Redis
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk import WebClient

from bot.slack.app import LOCAL_APP_TOKEN, LOCAL_BOT_TOKEN, CountCalls, build_slack_app, web_client
from bot.slack.relay import Relay
from orchestra import redisconn
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

CONNECT_RETRY_S = (0.2, 0.5, 1, 2, 5)


async def serve(settings: Settings, redis: Redis, *, relay: bool = True,
                stop: asyncio.Event | None = None) -> None:
    """Connect to Slack (or the local workspace) and handle requests until ``stop`` is set."""
    app = build_slack_app(settings, client=web_client(settings), redis=redis)
    handler = AsyncSocketModeHandler(app, app_token=settings.slack_app_token or LOCAL_APP_TOKEN)
    relay_stop = threading.Event()
    relay_thread = threading.Thread(target=_relay(settings).run, args=(relay_stop,), name="relay", daemon=True)
    if relay:
        relay_thread.start()
    try:
        await _connect(handler)
        logger.info("bot connected over socket mode to %s", settings.slack_api_url)
        await (stop or asyncio.Event()).wait()
    finally:
        relay_stop.set()
        await handler.close_async()
        if relay:
            await asyncio.to_thread(relay_thread.join, 5)


def _relay(settings: Settings) -> Relay:
    client = WebClient(token=settings.slack_bot_token or LOCAL_BOT_TOKEN, base_url=settings.slack_api_url)
    client.retry_handlers.insert(0, CountCalls())
    name = f"{socket.gethostname()}-{os.getpid()}"
    return Relay(redisconn.client_for(settings), settings, client, name=name)


async def _connect(handler: AsyncSocketModeHandler) -> None:
    for attempt, delay in enumerate((*CONNECT_RETRY_S, None)):
        try:
            await handler.connect_async()
            return
        except Exception as exc:  # the workspace may still be starting
            if delay is None:
                raise
            logger.info("socket mode connect attempt %s failed (%s); retrying in %ss", attempt + 1, exc, delay)
            await asyncio.sleep(delay)
