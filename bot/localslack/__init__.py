"""A local Slack workspace server for tests and local runs (see :mod:`bot.localslack.server`)."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from aiohttp import web

from bot.localslack.server import LocalSlack


@dataclass
class Running:
    """A started server: its behaviour object, its URL and how to stop it."""

    slack: LocalSlack
    url: str
    runner: web.AppRunner
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def stop(self) -> None:
        """Stop a server started with :func:`start_in_thread`."""
        if self.loop is None or self.thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


async def start(host: str = "127.0.0.1", port: int = 0, **options: object) -> Running:
    """Start the server on the running loop; port 0 picks a free one."""
    slack = LocalSlack(**options)  # type: ignore[arg-type]
    runner = web.AppRunner(slack.application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    slack.base_url = f"http://{host}:{bound}"
    return Running(slack, slack.base_url, runner)


def start_in_thread(host: str = "127.0.0.1", port: int = 0, **options: object) -> Running:
    """Start the server on its own event loop in a daemon thread (tests, benchmarks)."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Running] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        ready["r"] = loop.run_until_complete(start(host, port, **options))
        loop.run_forever()

    thread = threading.Thread(target=serve, name="localslack", daemon=True)
    thread.start()
    while "r" not in ready and thread.is_alive():
        thread.join(timeout=0.01)
    running = ready["r"]
    running.loop, running.thread = loop, thread
    return running
