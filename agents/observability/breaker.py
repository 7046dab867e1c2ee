"""The circuit breaker on automatic rollbacks: at most N per service and environment per hour."""
from __future__ import annotations

import time
import uuid

from redis import Redis

BREAKER_KEY = "orchestra:breaker:rollback:{service}:{env}"
WINDOW_S = 3600.0


class RollbackBreaker:
    """Counts automatic rollbacks in a sliding hour (a sorted set of timestamps in Redis)."""

    def __init__(self, redis: Redis, *, limit: int, window_s: float = WINDOW_S) -> None:
        self.redis = redis
        self.limit = limit
        self.window_s = window_s

    def recent(self, service: str, env: str, *, now: float | None = None) -> int:
        """Automatic rollbacks of ``service`` in ``env`` within the window."""
        now = time.time() if now is None else now
        key = BREAKER_KEY.format(service=service, env=env)
        self.redis.zremrangebyscore(key, "-inf", now - self.window_s)
        return int(self.redis.zcard(key))

    def allows(self, service: str, env: str, *, now: float | None = None) -> bool:
        """True while fewer than ``limit`` automatic rollbacks happened in the window."""
        return self.recent(service, env, now=now) < self.limit

    def record(self, service: str, env: str, *, now: float | None = None) -> int:
        """Count one automatic rollback; returns how many the window now holds."""
        now = time.time() if now is None else now
        key = BREAKER_KEY.format(service=service, env=env)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(key, {f"{now:.6f}-{uuid.uuid4().hex[:8]}": now})
        pipe.expire(key, int(self.window_s) + 60)
        pipe.execute()
        return self.recent(service, env, now=now)

    def reopens_at(self, service: str, env: str, *, now: float | None = None) -> float | None:
        """When the oldest counted rollback leaves the window (None while rollbacks are allowed)."""
        key = BREAKER_KEY.format(service=service, env=env)
        if self.allows(service, env, now=now):
            return None
        oldest = self.redis.zrange(key, 0, 0, withscores=True)
        return float(oldest[0][1]) + self.window_s if oldest else None
