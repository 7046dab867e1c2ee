"""Token and cost budgets for LLM calls, per run and per day, kept in Redis."""
from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

RUN_TOKENS = "orchestra:llm:run:{run_id}:tokens"
RUN_COST = "orchestra:llm:run:{run_id}:micro_usd"
DAY_TOKENS = "orchestra:llm:day:{day}:tokens"
DAY_COST = "orchestra:llm:day:{day}:micro_usd"
RUN_TTL_S = 7 * 86_400
DAY_TTL_S = 3 * 86_400

# US dollars per million tokens (input, output); unknown models are priced like Sonnet.
PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-1": (15.0, 75.0), "claude-opus-4": (15.0, 75.0), "claude-opus-4-5": (5.0, 25.0),
    "claude-sonnet-4-5": (3.0, 15.0), "claude-sonnet-4": (3.0, 15.0), "claude-3-7-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0), "claude-3-5-haiku": (0.8, 4.0),
}
DEFAULT_PRICE = (3.0, 15.0)


def cost_usd(model: str, input_tokens: int, output_tokens: int, *,
             price: tuple[float, float] | None = None) -> float:
    """What a call cost: at ``price`` (USD per million tokens in, out) when given, else from the
    Anthropic price table (longest matching model prefix)."""
    if price is None:
        match = max((m for m in PRICES if model.startswith(m)), key=len, default=None)
        price = PRICES[match] if match else DEFAULT_PRICE
    per_in, per_out = price
    return (input_tokens * per_in + output_tokens * per_out) / 1_000_000


@dataclass(frozen=True)
class Limits:
    run_tokens: int
    day_tokens: int
    run_usd: float | None = None
    day_usd: float | None = None


class Budget:
    """Spent tokens and cost per run and per UTC day; the Redis connection is passed in."""

    def __init__(self, redis: Redis, limits: Limits) -> None:
        self.redis = redis
        self.limits = limits

    def over(self, run_id: str, *, estimate_tokens: int = 0) -> str | None:
        """Why a call of about ``estimate_tokens`` must be skipped, or None when it fits."""
        day = _today()
        run_t, run_c, day_t, day_c = (int(v or 0) for v in self.redis.mget(
            RUN_TOKENS.format(run_id=run_id), RUN_COST.format(run_id=run_id),
            DAY_TOKENS.format(day=day), DAY_COST.format(day=day)))
        lim = self.limits
        if run_t + estimate_tokens > lim.run_tokens:
            return f"run token budget: {run_t} used + ~{estimate_tokens} needed > {lim.run_tokens}"
        if day_t + estimate_tokens > lim.day_tokens:
            return f"daily token budget: {day_t} used + ~{estimate_tokens} needed > {lim.day_tokens}"
        if lim.run_usd is not None and run_c / 1e6 >= lim.run_usd:
            return f"run cost budget: ${run_c / 1e6:.4f} used of ${lim.run_usd:.2f}"
        if lim.day_usd is not None and day_c / 1e6 >= lim.day_usd:
            return f"daily cost budget: ${day_c / 1e6:.4f} used of ${lim.day_usd:.2f}"
        return None

    def spend(self, run_id: str, tokens: int, usd: float) -> None:
        """Add a finished call's tokens and cost to its run and to today."""
        micro = round(usd * 1_000_000)
        day = _today()
        pipe = self.redis.pipeline(transaction=True)
        for key, amount, ttl in ((RUN_TOKENS.format(run_id=run_id), tokens, RUN_TTL_S),
                                 (RUN_COST.format(run_id=run_id), micro, RUN_TTL_S),
                                 (DAY_TOKENS.format(day=day), tokens, DAY_TTL_S),
                                 (DAY_COST.format(day=day), micro, DAY_TTL_S)):
            pipe.incrby(key, amount)
            pipe.expire(key, ttl)
        pipe.execute()

    def used(self, run_id: str) -> dict[str, float]:
        """Tokens and dollars spent by a run and today (for reports and the benchmark)."""
        day = _today()
        values = [int(v or 0) for v in self.redis.mget(
            RUN_TOKENS.format(run_id=run_id), RUN_COST.format(run_id=run_id),
            DAY_TOKENS.format(day=day), DAY_COST.format(day=day))]
        return {"run_tokens": values[0], "run_usd": values[1] / 1e6,
                "day_tokens": values[2], "day_usd": values[3] / 1e6}


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())
