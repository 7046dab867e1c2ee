"""Where each run's Slack thread lives, in Redis (the relay owns these keys)."""
from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

THREAD_KEY = "orchestra:slack:thread:{run_id}"  # hash: channel, ts, approval_ts
POSTED_KEY = "orchestra:slack:posted:{run_id}"  # set of event entry ids already replied to
RUN_OF_KEY = "orchestra:slack:run-of:{channel}:{ts}"  # a parent message -> its run id
CREATING = "creating"
TTL_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Thread:
    channel: str
    ts: str
    approval_ts: str | None = None


class Threads:
    """The parent message (channel, ts) of each run, and which events were already posted."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def get(self, run_id: str) -> Thread | None:
        raw = {_t(k): _t(v) for k, v in self.redis.hgetall(THREAD_KEY.format(run_id=run_id)).items()}
        if not raw.get("ts") or raw["ts"] == CREATING:
            return None
        return Thread(raw["channel"], raw["ts"], raw.get("approval_ts") or None)

    def claim(self, run_id: str, channel: str, *, ttl_s: int = 30) -> bool:
        """True for the one relay member that may post the parent message now."""
        key = THREAD_KEY.format(run_id=run_id)
        if not self.redis.hsetnx(key, "ts", CREATING):
            return False
        self.redis.hset(key, "channel", channel)
        self.redis.expire(key, ttl_s)  # a crashed poster frees the claim
        return True

    def release(self, run_id: str) -> None:
        self.redis.delete(THREAD_KEY.format(run_id=run_id))

    def save(self, run_id: str, channel: str, ts: str) -> Thread:
        key = THREAD_KEY.format(run_id=run_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"channel": channel, "ts": ts})
        pipe.expire(key, TTL_S)
        pipe.set(RUN_OF_KEY.format(channel=channel, ts=ts), run_id, ex=TTL_S)
        pipe.execute()
        return Thread(channel, ts)

    def run_of(self, channel: str, ts: str) -> str | None:
        """The run whose parent message is ``ts`` in ``channel`` (a mention in its thread)."""
        raw = self.redis.get(RUN_OF_KEY.format(channel=channel, ts=ts))
        return _t(raw) if raw else None

    def save_approval(self, run_id: str, ts: str) -> None:
        self.redis.hset(THREAD_KEY.format(run_id=run_id), "approval_ts", ts)

    def posted(self, run_id: str, entry_id: str) -> bool:
        return bool(self.redis.sismember(POSTED_KEY.format(run_id=run_id), entry_id))

    def mark_posted(self, run_id: str, entry_id: str) -> None:
        key = POSTED_KEY.format(run_id=run_id)
        self.redis.sadd(key, entry_id)
        self.redis.expire(key, TTL_S)


def _t(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
