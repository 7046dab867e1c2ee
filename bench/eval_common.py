"""What the evaluations share: a throwaway Redis, the configured model (or why there is none), model
usage read back from the ``llm_call`` events, and the table they print.

Each evaluation compares a deterministic path with the model path on the same corpus. The model is
whatever the environment configures (``Settings.from_env``: ``ORCHESTRA_LLM_URL`` with
``ORCHESTRA_LLM_PROTOCOL`` and ``ORCHESTRA_LLM_MODEL``, or ``ANTHROPIC_API_KEY``), so a team can compare
models on its own hardware by changing the environment and running the same command.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis

from orchestra.events import EventBus, EventType
from orchestra.llm import LLM
from orchestra.settings import Settings
from tests.support.services import redis_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CORPORA = Path(__file__).resolve().parent / "corpora"
NO_MODEL = ("no model configured (set ORCHESTRA_LLM_URL with ORCHESTRA_LLM_PROTOCOL and ORCHESTRA_LLM_MODEL, "
            "or ANTHROPIC_API_KEY)")
NOT_WANTED = "--no-model given"
MAX_EVENTS = 100_000
T = TypeVar("T")


@dataclass(frozen=True)
class Usage:
    """Model calls made (answered or failed) and tokens spent, as the ``llm_call`` events record them."""

    calls: int = 0
    failed: int = 0
    tokens: int = 0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.calls - other.calls, self.failed - other.failed, self.tokens - other.tokens)


@dataclass(frozen=True)
class Model:
    """The configured model, or None and the reason the model rows are skipped."""

    llm: LLM | None
    reason: str = ""

    @property
    def name(self) -> str:
        return str(getattr(self.llm, "model", "?")) if self.llm is not None else "-"


@contextmanager
def eval_redis(settings: Settings | None = None) -> Iterator[tuple[Settings, Redis]]:
    """Settings from the environment pointed at a throwaway redis-server, and a client on it."""
    base = settings or Settings.from_env()
    with redis_server() as url:
        redis = Redis.from_url(url)
        try:
            yield base.with_(redis_url=url), redis
        finally:
            redis.close()


def database(settings: Settings, db: int) -> Redis:
    """Another database of the evaluation's redis-server (facts a path reads, flushed per row)."""
    return Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + f"/{db}")


def configured_model(settings: Settings, redis: Redis, *, wanted: bool = True) -> Model:
    """The product's LLM client on ``settings``, unless none is configured or it was not wanted."""
    if not wanted:
        return Model(None, NOT_WANTED)
    llm = LLM.from_settings(settings, redis=redis)
    return Model(llm) if llm.available else Model(None, NO_MODEL)


def usage(redis: Redis) -> Usage:
    """Every model call recorded on ``redis`` so far (the Redis is the evaluation's own)."""
    calls = failed = tokens = 0
    for event in EventBus(redis).recent(MAX_EVENTS):
        if event.type != EventType.LLM_CALL or event.data.get("outcome") == "skipped":
            continue
        calls += 1
        failed += event.data.get("outcome") != "ok"
        tokens += int(event.data.get("input_tokens") or 0) + int(event.data.get("output_tokens") or 0)
    return Usage(calls, failed, tokens)


def measured(redis: Redis, work: Callable[[], T]) -> tuple[T, Usage, float]:
    """``work()``'s result with the model usage and wall seconds it took."""
    before, started = usage(redis), time.monotonic()
    result = work()
    return result, usage(redis) - before, time.monotonic() - started


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines corpus (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def share(part: int, whole: int) -> str:
    """``part/whole (pct%)``, or ``-`` when there is nothing to count."""
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "-"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table, columns padded to their widest cell."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def model_line(model: Model, redis: Redis) -> str:
    """Which model the model rows used (as the llm_call events name it), or why they were skipped."""
    if model.llm is None:
        return f"model rows skipped: {model.reason}"
    seen = sorted({str(e.data["model"]) for e in EventBus(redis).recent(MAX_EVENTS)
                   if e.type == EventType.LLM_CALL and e.data.get("outcome") != "skipped" and e.data.get("model")})
    answered = f" (calls answered by: {', '.join(seen)})" if seen and seen != [model.name] else ""
    return f"model: {model.name}{answered}"
