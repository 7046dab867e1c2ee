"""The GitHub webhook receiver: verify, de-duplicate, parse, answer fast, hand off.

``POST /github/webhook`` checks ``X-Hub-Signature-256`` over the raw body in
constant time, caps the body size, answers ``ping``, says why it ignores what it
does not use (202), rejects malformed payloads (400), claims ``X-GitHub-Delivery``
once (a redelivery starts nothing new) and hands the rest to a background task
(:class:`bot.github.handoff.Handoff`) so GitHub gets its answer in milliseconds.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from redis import Redis
from redis.exceptions import RedisError

from bot.github.client import GitHubClient
from bot.github.deliveries import Ignored, Malformed, parse_delivery, resolve_repo
from bot.github.handoff import DELIVERY_ONCE, Handoff
from orchestra import health
from orchestra.errors import OrchestraError
from orchestra.settings import Settings
from orchestra.store import begin_once, release_once

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/github/webhook"
MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub never sends more
CLAIM_TIMEOUT_S = 2.0
RETRY_AFTER_S = 10
SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
HANDOFF = web.AppKey("handoff", Handoff)
TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("tasks")
# One thread for the delivery claims: behind the hand-offs' threads they would queue
CLAIMS = web.AppKey("claims", ThreadPoolExecutor)


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is ``sha256=<HMAC-SHA256 of body>``; compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def check_secret(settings: Settings) -> None:
    """Raise unless deliveries can be verified (or dev mode explicitly accepts unsigned ones)."""
    if not settings.github_webhook_secret and not settings.dev_mode:
        raise OrchestraError("GITHUB_WEBHOOK_SECRET is not set, so deliveries cannot be verified",
                             hint="set it to the webhook's secret, or ORCHESTRA_DEV=1 to accept unsigned "
                                  "deliveries on a development machine")


def build_webhook_app(settings: Settings, *, redis: Redis, client: GitHubClient | None = None,
              handoff: Handoff | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> web.Application:
    """The webhook application; refuses to build without a secret unless ``settings.dev_mode``."""
    check_secret(settings)
    app = web.Application(client_max_size=max_body_bytes)
    app[SETTINGS] = settings
    app[REDIS] = redis
    app[TASKS] = set()
    app[CLAIMS] = ThreadPoolExecutor(1, "delivery-claims")
    if handoff is not None:
        app[HANDOFF] = handoff
    else:
        app.cleanup_ctx.append(_own_client(settings, redis, client))
    app.router.add_post(WEBHOOK_PATH, receive)
    app.router.add_get("/healthz", _health)
    app.on_shutdown.append(_drain)
    return app


def _own_client(settings: Settings, redis: Redis, client: GitHubClient | None) -> Any:
    async def ctx(app: web.Application) -> Any:
        gh = client or GitHubClient(settings.github_token, base_url=settings.github_api_url)
        app[HANDOFF] = Handoff(settings, redis=redis, client=gh)
        await asyncio.to_thread(_warm_up)
        yield
        await gh.close()
    return ctx


def _warm_up() -> None:
    """Import dispatch and the config model now, so the first delivery is as fast as the rest."""
    import jobs.dispatch  # noqa: F401
    import orchestra.config  # noqa: F401


async def receive(request: web.Request) -> web.Response:
    """Answer one delivery; never raises for bad input."""
    app = request.app
    settings = app[SETTINGS]
    body = await request.read()  # over client_max_size: aiohttp answers 413 itself
    secret = settings.github_webhook_secret
    if secret and not signature_ok(secret, body, request.headers.get("X-Hub-Signature-256")):
        return _answer(401, "rejected", "X-Hub-Signature-256 does not match the body signed with the secret")
    event = request.headers.get("X-GitHub-Event", "")
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if not event or not delivery or len(delivery) > 100:
        return _answer(400, "malformed", "X-GitHub-Event and X-GitHub-Delivery headers are required")
    try:
        payload = _payload(body, request.content_type)
        if event == "ping":
            return _answer(200, "pong", str(payload.get("zen", "")) if isinstance(payload, dict) else "")
        parsed = parse_delivery(event, payload)
    except Malformed as exc:
        logger.info("GitHub delivery %s (%s) malformed: %s", delivery, event, exc)
        return _answer(400, "malformed", f"{event} payload: {exc}")
    if isinstance(parsed, Ignored):
        return _answer(202, "ignored", parsed.reason)
    repo = resolve_repo(settings.repos, parsed.repo)
    if repo is None:
        return _answer(202, "ignored", f"repository {parsed.repo} is not served (add it to ORCHESTRA_REPOS as "
                                       f"its URL, or a folder whose last two parts are {parsed.repo})")
    key, token, loop = DELIVERY_ONCE.format(delivery=delivery), uuid.uuid4().hex, asyncio.get_running_loop()
    try:  # on a thread of its own (the event loop keeps answering), and not for long
        seen = await asyncio.wait_for(loop.run_in_executor(
            app[CLAIMS], partial(begin_once, app[REDIS], key, token=token)), CLAIM_TIMEOUT_S)
    except (RedisError, TimeoutError) as exc:
        logger.warning("GitHub delivery %s: Redis unavailable (%s)", delivery, type(exc).__name__)
        # the claim may still land when Redis answers: the same thread then takes it back
        loop.run_in_executor(app[CLAIMS], _release, app[REDIS], key, token)
        return _answer(503, "unavailable", "the queue is unavailable; redeliver this delivery later",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
    if seen == "done":
        return _answer(200, "duplicate", f"delivery {delivery} was already handled")
    if seen == "pending":
        return _answer(202, "in_progress", f"delivery {delivery} is being handled")
    task = asyncio.create_task(app[HANDOFF](parsed, delivery=delivery, repo=repo))
    app[TASKS].add(task)
    task.add_done_callback(app[TASKS].discard)
    return _answer(202, "accepted", f"{event} queued", delivery=delivery)


def _release(redis: Redis, key: str, token: str) -> None:
    try:
        release_once(redis, key, token)
    except RedisError as exc:  # still away: the claim, if it landed, ends with its lease
        logger.warning("could not release the claim on %s: %s", key, exc)


def _payload(body: bytes, content_type: str) -> Any:
    """JSON bodies, or the form encoding GitHub offers (``payload=<json>``)."""
    try:
        if content_type == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"))
            if "payload" not in fields:
                raise Malformed("form-encoded delivery without a `payload` field")
            return json.loads(fields["payload"][0])
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise Malformed(f"the body is not valid JSON ({exc})") from exc


async def _health(_: web.Request) -> web.Response:
    """What the Redis probe and the loops last reported (orchestra.health): answered without waiting on Redis."""
    ok, body = health.report()
    return web.json_response(body, status=200 if ok else 503, headers={"Cache-Control": "no-store"})


def _answer(status: int, result: str, reason: str, *, headers: dict[str, str] | None = None,
            **extra: str) -> web.Response:
    return web.json_response({"result": result, "reason": reason, **extra}, status=status, headers=headers)


async def _drain(app: web.Application) -> None:
    """Let hand-offs in flight finish (they were promised to GitHub) before shutting down."""
    pending: set[asyncio.Task[Any]] = app[TASKS]
    tasks = set(pending)
    if tasks:
        logger.info("waiting for %d GitHub hand-off(s) to finish", len(tasks))
        await asyncio.wait(tasks, timeout=30)
