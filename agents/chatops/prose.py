"""The LLM side of explain: prose written from the facts only, and checked to contain them.

An answer is shown only if it keeps every required fact and adds nothing that could mislead or
leak: a secret-looking value, a link, run id or bot command that the facts we wrote do not hold
(logs and test output may be an attacker's), or its own instructions. A rejected answer is
recorded in the audit trail.
"""
from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from redis import Redis

from agents.chatops.crashlog import redact
from orchestra.ids import RUN_ID
from orchestra.intents import Intent
from orchestra.prompts import load_prompt
from orchestra.redaction import UNTRUSTED_RULE
from orchestra.settings import Settings
from orchestra.store import Audit

if TYPE_CHECKING:
    from orchestra.llm import LLM

logger = logging.getLogger(__name__)

PROMPT = "explain_run"
LOGGED_FACTS = ("reason", "failure", "crash")  # written by the run's code and logs, not by us
# What an answer may only repeat from the facts we wrote, never add.
ADDED = {"link": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s)>\]]+", re.IGNORECASE), "run": RUN_ID,
         "command": re.compile(r"(?<![\w/])/(?:deploy|rollback|cancel|approve|orchestra)\b", re.IGNORECASE)}


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
    needed += [rb.get("value_text"), rb.get("threshold_text"), rb.get("metric"), rb.get("from_version")]
    return [str(n) for n in needed if n]


def unfit(text: str, facts: dict[str, Any]) -> str | None:
    """Why an LLM answer may not be shown (None: it may)."""
    missing = [m for m in required_mentions(facts) if m not in text]
    if missing:
        return f"it leaves out {', '.join(missing)}"
    if redact(text) != text:
        return "it contains what looks like a secret"
    known = json.dumps({k: v for k, v in facts.items() if k not in LOGGED_FACTS}, default=str)
    for what, pattern in ADDED.items():
        added = [m for m in pattern.findall(text) if m not in known]
        if added:
            return f"it adds a {what} that is not in the facts ({added[0][:80]})"
    flat = " ".join(text.split())
    if any(sentence in flat for sentence in _instructions()):
        return "it repeats its instructions"
    return None


def prose(llm: Summarizer, intent: Intent, facts: dict[str, Any], draft: str, *,
          audit: Audit | None = None) -> str | None:
    """The LLM's answer when it is :func:`unfit` for no reason; None (use the template) otherwise."""
    try:
        text = llm.summarize(intent.text or intent.kind.value, facts, draft)
    except Exception:
        logger.exception("explain: the LLM summary failed; using the template")
        return None
    if not text:
        return None
    problem = unfit(text, facts)
    if problem:
        logger.warning("explain: LLM answer not used (%s); using the template", problem)
        if audit is not None:
            audit.record("llm_answer_rejected", actor="llm", run_id=facts.get("run_id"), prompt=PROMPT,
                         reason=problem)
        return None
    return redact(text)


@lru_cache(maxsize=1)
def _instructions() -> tuple[str, ...]:
    """The sentences of the prompt's instructions (and the fence marker), whitespace flattened."""
    said = " ".join(f"{load_prompt(PROMPT).system} {UNTRUSTED_RULE}".split())
    return ("untrusted-data", *(s for s in re.split(r"(?<=[.:])\s", said) if len(s) >= 30))
