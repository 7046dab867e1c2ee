"""Rules first, the language model for what the rules do not recognise; both end in the same Intent.

The model proposes, code decides: its answer is validated against the known
services, environments and safe refs (a ref must appear in the message), and
an action it proposes (deploy, rollback, cancel) is only carried out after the
user confirms it with a button.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from redis import Redis
from redis.exceptions import RedisError

from orchestra.intents import ENVIRONMENTS, REF_PATTERN, STRATEGIES, Intent, IntentKind
from orchestra.parse import ENV_ALIASES, NEGATIONS, UNSAFE_CHARS, Parsed, parse
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

PROMPT = "parse_intent"
MIN_CONFIDENCE = 0.6
CHAT_INTENTS = ("deploy", "rollback", "status", "explain", "history", "cancel", "help", "unknown")
ACTIONS = {IntentKind.DEPLOY, IntentKind.ROLLBACK, IntentKind.CANCEL}


class IntentGuess(BaseModel):
    """The one intent a chat message expresses, with the fields it states; unknown when none fits."""

    intent: Literal["deploy", "rollback", "status", "explain", "history", "cancel", "help", "unknown"]
    service: str | None = None
    ref: str | None = None
    env: str | None = None
    strategy: str | None = None
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)


@dataclass
class Understander:
    """Turns text into a :class:`Parsed`; ``llm`` (orchestra.llm.LLM) is None without a model."""

    llm: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, redis: Redis | None = None,
                      use_llm: bool = True) -> Understander:
        if not (use_llm and settings.llm_configured):
            return cls(llm=None)
        from orchestra.llm import LLM

        return cls(llm=LLM.from_settings(settings, redis=redis or Redis.from_url(settings.redis_url)))

    def understand(self, text: str, services: Sequence[str]) -> Parsed:
        """The deterministic parse; the model is asked only when the rules did not understand."""
        parsed = parse(text, services)
        if parsed.understood or self.llm is None or not self.llm.available:
            return parsed
        from orchestra.llm import LLMError

        variables = {"text": text, "intents": ", ".join(CHAT_INTENTS), "services": ", ".join(services),
                     "environments": ", ".join(ENVIRONMENTS)}
        try:
            guess = self.llm.structured(PROMPT, variables, IntentGuess, max_tokens=300, fast=True)
        except (LLMError, RedisError) as exc:  # no model, over budget, API down, or no Redis for budgets
            logger.info("intent model not used: %s", exc)
            return parsed
        return validated(guess, text, services)


def validated(guess: IntentGuess, text: str, services: Sequence[str]) -> Parsed:
    """The model's guess checked like user input; anything doubtful becomes unknown."""
    kind = IntentKind(guess.intent)
    service = guess.service if guess.service in services else None
    env = ENV_ALIASES.get((guess.env or "").lower())
    strategy = guess.strategy if guess.strategy in STRATEGIES else None
    ref = guess.ref if guess.ref and _safe_ref_in(guess.ref, text) else None
    words = f" {text.lower()} "
    doubtful = guess.confidence < MIN_CONFIDENCE or (
        kind in ACTIONS and (service is None or any(f" {n} " in words for n in NEGATIONS)))
    if doubtful or kind == IntentKind.UNKNOWN:
        return Parsed(Intent(kind=IntentKind.UNKNOWN, text=text), understood=False)
    intent = Intent(kind=kind, service=service, ref=ref, env=env, strategy=strategy, text=text)
    return Parsed(intent, needs_confirmation=kind in ACTIONS)


def _safe_ref_in(ref: str, text: str) -> bool:
    return ref in text and bool(REF_PATTERN.match(ref)) and not UNSAFE_CHARS.search(ref)
