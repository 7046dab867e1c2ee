"""Each service's tests that ever failed, across runs: how often they ran and failed, and when last.

Per project and service, a hash (test id -> JSON: runs, failures, flaky, broken, last_seen, last_run)
and a sorted set (test id -> when it last failed) that bounds the hash: past :data:`MAX_TESTS` the
tests that failed longest ago are dropped. A test enters the record when it fails; after that every
run of the service counts its suite run too, so the failure rate is over all its runs since. Both
keys are updated in one Lua step, so two runs of a service never lose each other's counts.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

PREFIX = "orchestra:flaky"
MAX_TESTS = 200
MAX_ID = 300

# KEYS: hash, zset. ARGV: now, run id, max tests, then (test id, JSON delta) pairs.
_UPDATE = """
local now, run, cap = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  local id, delta = ARGV[i], cjson.decode(ARGV[i + 1])
  local old = redis.call('HGET', KEYS[1], id)
  if old or delta.failures > 0 then
    local rec = old and cjson.decode(old) or {runs = 0, failures = 0, flaky = 0, broken = 0}
    rec.runs = rec.runs + delta.runs
    rec.failures = rec.failures + delta.failures
    rec.flaky = rec.flaky + delta.flaky
    rec.broken = rec.broken + delta.broken
    if delta.failures > 0 then
      rec.last_seen = now
      rec.last_run = run
      redis.call('ZADD', KEYS[2], now, id)
    end
    redis.call('HSET', KEYS[1], id, cjson.encode(rec))
  end
end
local extra = redis.call('ZCARD', KEYS[2]) - cap
if extra > 0 then
  local gone = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('HDEL', KEYS[1], unpack(gone))
end
return redis.call('HLEN', KEYS[1])
"""


@dataclass(frozen=True)
class Record:
    """One test's history in a service."""

    test: str
    runs: int
    failures: int
    flaky: int  # stage runs that judged it flaky
    broken: int  # stage runs that judged it broken
    last_seen: float | None  # when it last failed
    last_run: str | None

    @property
    def failure_rate(self) -> float:
        return self.failures / self.runs if self.runs else 0.0


def keys(project: str, service: str) -> tuple[str, str]:
    return f"{PREFIX}:{project}:{service}", f"{PREFIX}:{project}:{service}:seen"


def update(redis: Redis, project: str, service: str, *, run_id: str, decisions: list[dict[str, Any]],
           passed: list[str], now: float | None = None) -> int:
    """Add one stage run's results: the decisions (with their re-runs) and the tests that passed in the suite
    (counted only for tests already in the record). Returns how many tests the record holds."""
    deltas: dict[str, dict[str, int]] = {}
    known = {k.decode(errors="replace") for k in redis.hkeys(keys(project, service)[0])}  # type: ignore[union-attr]
    for test in passed:
        if test[:MAX_ID] in known:  # the script checks again: this only keeps its arguments short
            deltas[test[:MAX_ID]] = {"runs": 1, "failures": 0, "flaky": 0, "broken": 0}
    for d in decisions:
        deltas[d["test"][:MAX_ID]] = {"runs": d["runs"], "failures": d["failures"],
                                      "flaky": int(d["verdict"] == "flaky"), "broken": int(d["verdict"] == "broken")}
    argv: list[str] = [repr(now if now is not None else time.time()), run_id, str(MAX_TESTS)]
    for test, delta in deltas.items():
        argv += [test, json.dumps(delta)]
    return int(redis.eval(_UPDATE, 2, *keys(project, service), *argv))


def records(redis: Redis, project: str, service: str) -> list[Record]:
    """Every test the record holds for a service, the most recently failing first."""
    raw: dict[bytes, bytes] = redis.hgetall(keys(project, service)[0])  # type: ignore[assignment]
    out = []
    for test, value in raw.items():
        data = json.loads(value)
        out.append(Record(test.decode(errors="replace"), int(data.get("runs", 0)), int(data.get("failures", 0)),
                          int(data.get("flaky", 0)), int(data.get("broken", 0)), data.get("last_seen"),
                          data.get("last_run")))
    return sorted(out, key=lambda r: -(r.last_seen or 0))
