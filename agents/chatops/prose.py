"""The LLM side of explain: prose written from the facts only, and checked to contain them."""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from redis import Redis

from agents.chatops.crashlog import redact
from orchestra.intents import Intent
from orchestra.settings import Settings

if TYPE_CHECKING:
    from orchestra.llm import LLM

logger = logging.getLogger(__name__)

PROMPT = "explain_run"


class Summarizer(Protocol):
    """What explain needs from an LLM: prose from facts, or None when it cannot."""

    def summarize(self, question: str, facts: dict[str, Any], draft: str) -> str | None: ...


class LLMSummarizer:
    """The product's LLM client as a :class:`Summarizer` (prompt ``explain_run``)."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def summarize(self, question: str, facts: dict[str, Any], draft: str) -> str | None:
        from orchestra.llm import LLMError

        variables = {"question": question, "facts": json.dumps(facts, default=str), "draft": draft}
        try:
            return self.llm.text(PROMPT, variables, run_id=facts.get("run_id"), max_tokens=600)
        except LLMError as exc:
            logger.info("explain: no LLM summary (%s); using the template", exc)
            return None


def writer_for(llm: Summarizer | LLM | None, settings: Settings, redis: Redis) -> Summarizer | None:
    if llm is None:
        if not settings.llm_configured:
            return None
        from orchestra.llm import LLM  # the SDK is heavy: only load it when a key is set

        llm = LLM.from_settings(settings, redis=redis)
    return llm if hasattr(llm, "summarize") else LLMSummarizer(llm)  # type: ignore[arg-type]


def required_mentions(facts: dict[str, Any]) -> list[str]:
    """Strings an LLM answer must contain to count as grounded in ``facts``."""
    if facts.get("topic") == "status":
        return [str(r["version"]) for r in facts.get("running", []) if r.get("version")]
    needed = [facts.get("run_id")]
    rb = facts.get("rollback") or {}
    needed += [rb.get("value_text"), rb.get("threshold_text"), rb.get("metric")]
    return [str(n) for n in needed if n]


def prose(llm: Summarizer, intent: Intent, facts: dict[str, Any], draft: str) -> str | None:
    """The LLM's answer when it keeps every required fact; None (use the template) otherwise."""
    try:
        text = llm.summarize(intent.text or intent.kind.value, facts, draft)
    except Exception:
        logger.exception("explain: the LLM summary failed; using the template")
        return None
    if not text:
        return None
    missing = [m for m in required_mentions(facts) if m not in text]
    if missing:
        logger.warning("explain: LLM answer left out %s; using the template", missing)
        return None
    return redact(text)
