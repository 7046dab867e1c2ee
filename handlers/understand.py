"""Rules first, the language model for what the rules do not recognise; both end in the same Intent.

The model proposes, code decides: its answer is validated against the known
services, environments and safe refs (a ref must appear in the message), and
an action it proposes (deploy, rollback, cancel) is only carried out after the
user confirms it with a button. An action it proposes, and an answer that does
not validate, are recorded in the audit trail with what became of them.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from redis import Redis
from redis.exceptions import RedisError

from orchestra import redisconn
from orchestra.intents import ENVIRONMENTS, REF_PATTERN, STRATEGIES, Intent, IntentKind
from orchestra.parse import ENV_ALIASES, NEGATIONS, UNSAFE_CHARS, Parsed, parse
from orchestra.redaction import redact
from orchestra.settings import Settings
from orchestra.store import Audit

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
    audit: Audit | None = None  # where the model's actions and invalid answers are recorded

    @classmethod
    def from_settings(cls, settings: Settings, *, redis: Redis | None = None,
                      use_llm: bool = True) -> Understander:
        if not (use_llm and settings.llm_configured):
            return cls(llm=None)
        from orchestra.llm import LLM

        conn = redis or redisconn.client_for(settings)
        return cls(llm=LLM.from_settings(settings, redis=conn), audit=Audit(conn))

    def understand(self, text: str, services: Sequence[str]) -> Parsed:
        """The deterministic parse; the model is asked only when the rules did not understand."""
        parsed = parse(text, services)
        if parsed.understood or self.llm is None or not self.llm.available:
            return parsed
        from orchestra.llm import LLMError, LLMFailed

        variables = {"text": text, "intents": ", ".join(CHAT_INTENTS), "services": ", ".join(services),
                     "environments": ", ".join(ENVIRONMENTS)}
        try:
            guess = self.llm.structured(PROMPT, variables, IntentGuess, max_tokens=300, fast=True)
        except (LLMError, RedisError) as exc:  # no model, over budget, API down, or no Redis for budgets
            logger.info("intent model not used: %s", exc)
            if isinstance(exc, LLMFailed):
                self._record(text, None, f"not used: {exc.message}")
            return parsed
        understood = validated(guess, text, services)
        if IntentKind(guess.intent) in ACTIONS:
            self._record(text, guess, "held for the user's confirmation" if understood.needs_confirmation
                         else f"discarded: {doubt(guess, text, services)}")
        return understood

    def _record(self, text: str, guess: IntentGuess | None, outcome: str) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record("llm_guess_not_acted_on", actor="llm", outcome=outcome, text=redact(text)[:300],
                              guess=redact(guess.model_dump_json())[:300] if guess else None)
        except RedisError as exc:  # the parse still answers without Redis
            logger.info("intent model answer not recorded: %s", exc)


def validated(guess: IntentGuess, text: str, services: Sequence[str]) -> Parsed:
    """The model's guess checked like user input; anything doubtful becomes unknown."""
    kind = IntentKind(guess.intent)
    service = guess.service if guess.service in services else None
    env = ENV_ALIASES.get((guess.env or "").lower())
    strategy = guess.strategy if guess.strategy in STRATEGIES else None
    ref = guess.ref if guess.ref and _safe_ref_in(guess.ref, text) else None
    if doubt(guess, text, services) or kind == IntentKind.UNKNOWN:
        return Parsed(Intent(kind=IntentKind.UNKNOWN, text=text), understood=False)
    intent = Intent(kind=kind, service=service, ref=ref, env=env, strategy=strategy, text=text)
    return Parsed(intent, needs_confirmation=kind in ACTIONS)


def doubt(guess: IntentGuess, text: str, services: Sequence[str]) -> str | None:
    """Why the guess may not be taken (None: it may)."""
    if guess.confidence < MIN_CONFIDENCE:
        return f"confidence {guess.confidence:.2f} is below {MIN_CONFIDENCE}"
    if IntentKind(guess.intent) not in ACTIONS:
        return None
    if guess.service not in services:
        return "it names no configured service"
    words = f" {text.lower()} "
    if any(f" {n} " in words for n in NEGATIONS):
        return "the message says not to"
    return None


def _safe_ref_in(ref: str, text: str) -> bool:
    return ref in text and bool(REF_PATTERN.match(ref)) and not UNSAFE_CHARS.search(ref)
