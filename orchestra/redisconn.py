"""The Redis connection: with credentials, to a server that asks for them, as a user allowed what it needs.

Every entry point connects through :func:`connect`. A Redis that serves a client which sent no password
(its ``default`` user on, without one) lets anybody who reaches its port read runs, forge events and
enqueue jobs, so the product refuses it unless ``ORCHESTRA_DEV=1``. :data:`PROCESS_ACLS` is the ACL
each process needs (README, "Redis"); :func:`check_acl` asks the server, before the process starts
serving, whether the connected user may run it — without running anything.

With Redis Sentinel (``Settings.redis_sentinel``) every client is ``Sentinel.master_for``'s
(:mod:`orchestra.sentinel`), so after a failover it reaches the new master.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestra.errors import OrchestraError
from orchestra.sentinel import master_address, master_client, master_options, once
from orchestra.settings import SENTINEL_HINT, RedisSentinel, Settings

PROBE_TIMEOUT_S = 5.0
SECURE_HINT = ("give Redis a password (`requirepass`, or `ACL SETUSER default off` and a user per process, "
               "README \"Redis\") and put it in REDIS_URL: redis://:PASSWORD@HOST:6379/0 or "
               "redis://USER:PASSWORD@HOST:6379/0 (rediss:// for TLS); scripts/up does this for you. "
               "ORCHESTRA_DEV=1 accepts an open Redis on a development machine")


@dataclass(frozen=True)
class Acl:
    """What one process may do: ``ACL SETUSER <user> on >PASSWORD`` followed by :meth:`rules`."""

    keys: tuple[str, ...]
    channels: tuple[str, ...]
    commands: tuple[str, ...]
    # Commands queued (never run) at start: one per rule above, so a missing rule is named at once.
    probes: tuple[tuple[str, ...], ...]

    def rules(self) -> list[str]:
        return ["resetkeys", *(f"~{k}" for k in self.keys), "resetchannels", *(f"&{c}" for c in self.channels),
                "-@all", *self.commands]


_DATA = ("+@read", "+@write", "+@transaction", "+@connection", "+eval", "+evalsha", "+script|load",
         "+script|exists", "-@dangerous", "+info")
_DATA_PROBES = (("HGET", "orchestra:run:probe", "f"), ("XADD", "orchestra:events", "*", "f", "v"),
                ("LPUSH", "rq:queue:probe", "x"), ("ECHO", "probe"), ("EVAL", "return 1", "1", "orchestra:run:probe"),
                ("EVALSHA", "0" * 40, "1", "rq:job:probe"), ("SCRIPT", "LOAD", "return 1"),
                ("SCRIPT", "EXISTS", "0" * 40), ("INFO", "server"))
# INFO: RQ reads the server's version when it enqueues and works. CLIENT LIST is left out on purpose
# (it shows every client's address and name): RQ then records a worker's address as "unknown".
PROCESS_ACLS: dict[str, Acl] = {
    # Slack: dispatches runs (run records, locks, audit, the first job on RQ's queue), relays events
    # into threads (a consumer group on the event stream), serves /metrics (queue depth).
    "bot": Acl(keys=("orchestra:*", "rq:*"), channels=(), commands=_DATA, probes=_DATA_PROBES),
    # GitHub: the same as the bot, for deliveries and the PR-comment relay.
    "webhooks": Acl(keys=("orchestra:*", "rq:*"), channels=(), commands=_DATA, probes=_DATA_PROBES),
    # RQ's worker names its connection (@connection) and listens for stop commands on its pub/sub
    # channel; the router beside it moves runs between stages.
    "worker": Acl(keys=("orchestra:*", "rq:*"), channels=("rq:pubsub:*",),
                  commands=(*_DATA, "+subscribe", "+unsubscribe", "+publish"),
                  probes=(*_DATA_PROBES, ("CLIENT", "SETNAME", "probe"), ("SUBSCRIBE", "rq:pubsub:probe"),
                          ("UNSUBSCRIBE", "rq:pubsub:probe"), ("PUBLISH", "rq:pubsub:probe", "x"))),
}


def client(url: str, sentinel: RedisSentinel | None = None) -> Redis:
    """A client of the Redis of ``url``, or of the master the sentinels name (followed across failovers).

    Nothing is checked and nothing connected yet: :func:`connect` is for a process's start.
    """
    if sentinel is None:
        return Redis.from_url(url)
    return master_client(url, sentinel)


def client_for(settings: Settings) -> Redis:
    """:func:`client` for a process's settings (REDIS_URL, and the sentinels when set)."""
    return client(settings.redis_url, settings.redis_sentinel)


def connect(url: str, *, dev_mode: bool = False, role: str | None = None,
            sentinel: RedisSentinel | None = None) -> Redis:
    """A Redis connection that answers with the credentials in ``url``, to a server that demands them."""
    where, address = public_url(url), None
    if sentinel is not None:
        address = master_address(sentinel, dev_mode=dev_mode)
        where = f"{address[0]}:{address[1]} (the master {sentinel.master_name!r} of REDIS_SENTINELS)"
    redis = client(url, sentinel)
    try:
        redis.ping()
    except AuthenticationError as exc:  # a ConnectionError to redis-py: before it
        raise OrchestraError(f"Redis at {where} refused the credentials in REDIS_URL: {exc}",
                             hint=_credentials_hint(url)) from exc
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise OrchestraError(f"cannot reach Redis at {where}: {exc}",
                             hint="start it (redis-server, or scripts/up) or set REDIS_URL") from exc
    except NoPermissionError as exc:
        raise OrchestraError(f"the Redis user of REDIS_URL may not even PING: {exc}",
                             hint=_acl_hint(role)) from exc
    except ResponseError as exc:  # e.g. AUTH sent to a server that has no password at all
        raise OrchestraError(f"Redis at {where} refused the connection: {exc}", hint=SECURE_HINT) from exc
    if not dev_mode and serves_anonymous(url, address):
        raise OrchestraError(f"Redis at {where} serves clients that send no password: anyone who "
                             "reaches its port can read runs, forge events and enqueue jobs", hint=SECURE_HINT)
    _refuse_cluster(redis, where)
    if role is not None:
        check_acl(redis, role)
    return redis


def serves_anonymous(url: str, address: tuple[str, int] | None = None) -> bool:
    """Whether the server of ``url`` (or at ``address``) serves a connection that sends no credentials.

    Any answer but NOAUTH counts: a ``default`` user on without a password whose commands are
    limited (NOPERM) still lets a stranger run whatever it is allowed.
    """
    if address is None:
        probe = Redis.from_url(without_credentials(url), socket_timeout=PROBE_TIMEOUT_S,
                               socket_connect_timeout=PROBE_TIMEOUT_S)
    else:
        tls = {k: v for k, v in master_options(url).items() if k.startswith("ssl")}
        probe = Redis(host=address[0], port=address[1], **once(), **tls)
    try:
        probe.ping()
    except AuthenticationError:
        return False
    except NoPermissionError:
        return True
    finally:
        probe.close()
    return True


def _refuse_cluster(redis: Redis, where: str) -> None:
    """Refuse a Redis Cluster node: RQ and the locks' scripts use keys that share no hash tag."""
    try:
        enabled = redis.info("cluster").get("cluster_enabled")
    except NoPermissionError:  # a user without INFO fails check_acl, saying so
        return
    if enabled:
        raise OrchestraError(f"Redis at {where} is a Redis Cluster node: Redis Cluster is not supported",
                             hint="RQ and the deploy locks use several keys in one command or script, which a "
                                  "Cluster refuses; use one Redis, or Redis Sentinel for failover: " + SENTINEL_HINT)


def check_acl(redis: Redis, role: str) -> None:
    """Fail, naming each refused rule, unless the connected user may do what process ``role`` does.

    The probes are queued inside MULTI and discarded: Redis checks a queued command's ACL (command,
    keys, channels) when it queues it, so nothing runs and nothing is written.
    """
    acl = PROCESS_ACLS[role]
    reasons = _queue(redis, acl.probes)
    refused = [f"{' '.join(cmd[:2])}: {reason}" for cmd, reason in zip(acl.probes, reasons, strict=True) if reason]
    if refused:
        raise OrchestraError(f"the Redis user of REDIS_URL lacks permissions the {role} needs: " + "; ".join(refused),
                             hint=_acl_hint(role))


def _queue(redis: Redis, commands: Sequence[tuple[str, ...]]) -> list[str | None]:
    """Per command, None when Redis would run it inside MULTI, else its refusal; then DISCARD."""
    conn = redis.connection_pool.get_connection()
    reasons: list[str | None] = []
    try:
        conn.send_command("MULTI")
        conn.read_response()
        for command in commands:
            conn.send_command(*command)
            try:
                conn.read_response()
                reasons.append(None)
            except NoPermissionError as exc:
                reasons.append(str(exc))
        conn.send_command("DISCARD")
        conn.read_response()
    except NoPermissionError as exc:  # MULTI itself
        reasons = [str(exc)] * len(commands)
        conn.disconnect()
    except RedisError:
        conn.disconnect()
        raise
    finally:
        redis.connection_pool.release(conn)
    return reasons


def acl_setuser(role: str, user: str, password: str) -> list[str]:
    """The arguments of ``ACL SETUSER`` that create ``user`` for process ``role`` (README, "Redis")."""
    return [user, "reset", "on", f">{password}", *PROCESS_ACLS[role].rules()]


def without_credentials(url: str) -> str:
    """``url`` with no user or password (written by hand: urllib drops the ``//`` of ``unix://``)."""
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{tail}"


def public_url(url: str) -> str:
    """``url`` with its password replaced, for messages and logs."""
    if urlsplit(url).password is None:
        return url
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, _, host = authority.rpartition("@")
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}{slash}{tail}"


def _credentials_hint(url: str) -> str:
    if urlsplit(url).password is None:
        return "this Redis wants a password: put it in REDIS_URL (redis://:PASSWORD@HOST:PORT/DB, or USER:PASSWORD@)"
    return "check the user and password in REDIS_URL against the server's requirepass or ACL users"


def _acl_hint(role: str | None) -> str:
    which = f"the {role}'s" if role else "each process's"
    return f"grant {which} ACL from the README (\"Redis\"): ACL SETUSER USER on >PASSWORD plus its rules"
