"""Redis Sentinel: clients of the master the sentinels name, and the checks made before trusting them.

A client from :func:`master_client` asks the sentinels where the master is whenever it connects, so
after a failover it reaches the new master. A sentinel that serves clients without a password is
refused like an open Redis: anyone who reaches it could name a server of theirs as the master
(SENTINEL REMOVE, then MONITOR), which would then receive the password of REDIS_URL and feed the
workers its jobs.
"""
from __future__ import annotations

from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from orchestra.errors import OrchestraError
from orchestra.settings import SENTINEL_HINT, RedisSentinel

PROBE_TIMEOUT_S = 5.0
# Asking a sentinel that is down (often beside the master that died) fails at once and the next is asked:
# redis-py's default retries with backoff would cost seconds per dead sentinel at every reconnection.


def once() -> dict[str, Any]:
    """Connection options for a question asked once, with a time limit: a probe, a sentinel."""
    return {"socket_timeout": PROBE_TIMEOUT_S, "socket_connect_timeout": PROBE_TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0)}


def master_client(url: str, sentinel: RedisSentinel) -> Redis:
    """A client of the master named ``sentinel.master_name``, with the credentials, database and TLS of ``url``."""
    return _sentinels(sentinel).master_for(sentinel.master_name, **master_options(url))


def master_options(url: str) -> dict[str, Any]:
    """The connection options of ``url`` but its address: credentials, database, TLS."""
    options = {k: v for k, v in parse_url(url).items() if k not in ("host", "port", "path", "connection_class")}
    if url.startswith("rediss://"):
        options["ssl"] = True
    return options


def master_address(sentinel: RedisSentinel, *, dev_mode: bool = False) -> tuple[str, int]:
    """Where the sentinels say the master is, after checking each reachable sentinel; clear errors else."""
    answered = [address for address in sentinel.addresses if _check_sentinel(sentinel, address, dev_mode)]
    listed = ", ".join(f"{h}:{p}" for h, p in sentinel.addresses)
    if not answered:
        raise OrchestraError(f"none of the sentinels of REDIS_SENTINELS ({listed}) answers",
                             hint="start them (redis-sentinel, or redis-server --sentinel) or fix REDIS_SENTINELS")
    try:
        host, port = _sentinels(sentinel).discover_master(sentinel.master_name)
    except MasterNotFoundError as exc:
        raise OrchestraError(f"the sentinels ({listed}) know no reachable master {sentinel.master_name!r}: {exc}",
                             hint="wait for the failover to end, or check the master and the sentinels' logs") from exc
    return str(host), int(port)


def _check_sentinel(sentinel: RedisSentinel, address: tuple[str, int], dev_mode: bool) -> bool:
    """False when the sentinel at ``address`` is down (others may answer); raises when it is wrong."""
    host, port = address
    anonymous = Redis(host=host, port=port, **once())
    authed = Redis(host=host, port=port, password=sentinel.password, **once())
    try:
        if not dev_mode and _answers(anonymous):
            raise OrchestraError(f"the sentinel at {host}:{port} serves clients that send no password: anyone who "
                                 "reaches it can name a server of theirs as the master, which would receive the "
                                 "password of REDIS_URL and feed the workers its jobs",
                                 hint="set `requirepass` in every sentinel's configuration and the same password in "
                                      "REDIS_SENTINEL_PASSWORD; ORCHESTRA_DEV=1 accepts open sentinels on a "
                                      "development machine")
        authed.sentinel_master(sentinel.master_name)
    except AuthenticationError as exc:
        if sentinel.password is None:
            raise OrchestraError(f"the sentinel at {host}:{port} asks for a password and REDIS_SENTINEL_PASSWORD "
                                 "is not set",
                                 hint="put the sentinels' `requirepass` in REDIS_SENTINEL_PASSWORD") from exc
        raise OrchestraError(f"the sentinel at {host}:{port} refused REDIS_SENTINEL_PASSWORD: {exc}",
                             hint="put the sentinels' `requirepass` in REDIS_SENTINEL_PASSWORD") from exc
    except (RedisConnectionError, RedisTimeoutError):
        return False
    except ResponseError as exc:
        raise OrchestraError(f"the sentinel at {host}:{port} does not serve the master "
                             f"{sentinel.master_name!r}: {exc}", hint=SENTINEL_HINT) from exc
    finally:
        anonymous.close()
        authed.close()
    return True


def _answers(redis: Redis) -> bool:
    try:
        redis.ping()
    except AuthenticationError:
        return False
    return True


def _sentinels(sentinel: RedisSentinel) -> Sentinel:
    return Sentinel(list(sentinel.addresses), sentinel_kwargs={"password": sentinel.password, **once()})
