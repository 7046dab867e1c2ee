"""The Slack app factory: ``build_slack_app(settings, client=..., redis=...)`` (STYLE rule 2)."""
from __future__ import annotations

import logging

from redis import Redis
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryHandler, RetryState
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.listeners import Deps, register
from handlers.catalog import Catalog
from handlers.understand import Understander
from orchestra.settings import Settings
from orchestra.telemetry import SLACK_CALLS

logger = logging.getLogger(__name__)

LOCAL_BOT_TOKEN = "xoxb-local"
LOCAL_APP_TOKEN = "xapp-local"


def build_slack_app(settings: Settings, *, client: AsyncWebClient, redis: Redis,
              understander: Understander | None = None, catalog: Catalog | None = None) -> AsyncApp:
    """A Bolt app whose listeners use ``client`` for Slack and ``redis`` for everything else."""
    app = AsyncApp(client=client, logger=logging.getLogger("slack_bolt"),
                   ignoring_self_events_enabled=True, request_verification_enabled=False)
    deps = Deps(settings=settings, redis=redis,
                understander=understander or Understander.from_settings(settings, redis=redis),
                catalog=catalog or Catalog.from_settings(settings))
    register(app, deps)
    return app


def web_client(settings: Settings) -> AsyncWebClient:
    """The Web API client: Slack itself with tokens, the local workspace without.

    Replies to users wait out a 429's Retry-After and retry a server error once.
    """
    client = AsyncWebClient(token=settings.slack_bot_token or LOCAL_BOT_TOKEN, base_url=settings.slack_api_url)
    client.retry_handlers.insert(0, AsyncCountCalls())
    client.retry_handlers.extend([AsyncRateLimitErrorRetryHandler(max_retry_count=2),
                                  AsyncServerErrorRetryHandler(max_retry_count=1)])
    return client


class CountCalls(RetryHandler):
    """Retries nothing; counts every Web API answer by method and status (``SLACK_CALLS``).

    slack_sdk shows every answer, a 429 that a later handler retries included, to the retry handlers in
    order, so this one goes first. It is a retry handler because Bolt gives each request a new client
    with copies of the handler list and nothing else of ours.
    """

    def can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                  error: Exception | None = None) -> bool:
        _count(request, response)
        return False


class AsyncCountCalls(AsyncRetryHandler):
    """:class:`CountCalls` for the async client."""

    async def can_retry_async(self, *, state: RetryState, request: HttpRequest,
                              response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        _count(request, response)
        return False


def _count(request: HttpRequest, response: HttpResponse | None) -> None:
    method = request.url.split("?", 1)[0].rsplit("/", 1)[-1]
    SLACK_CALLS.labels(method, str(response.status_code) if response is not None else "error").inc()
