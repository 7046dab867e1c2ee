"""The one LLM client of the product (Anthropic Messages API).

Usage::

    from orchestra.llm import LLM, LLMSkipped, LLMFailed

    llm = LLM.from_settings(settings, redis=redis)         # redis: budgets + provenance events
    if not llm.available:                                   # no ANTHROPIC_API_KEY
        ...                                                 # deterministic path, and say so
    try:
        intent = llm.structured("parse_intent", {"text": text, "intents": names},
                                IntentGuess, run_id=run_id)  # a validated pydantic model
        answer = llm.text("explain_run", {...}, run_id=run_id)
    except LLMSkipped as skip:                              # no key, or over budget
        logger.info("run %s: %s", run_id, skip.reason)      # -> deterministic path
    except LLMFailed:                                       # API error after retries, bad output
        ...

``astructured`` / ``atext`` are the same calls for async code (run in a worker thread).
Prompts come from ``prompts/<name>.md`` (see orchestra.prompts); every variable is redacted of
secrets and the prompt's ``untrusted`` variables are fenced as data. 429 and 5xx answers are
retried with backoff by the SDK (``max_retries``); a structured answer that does not validate gets
one repair turn. Token budgets per run and per UTC day come from Settings, optional dollar budgets
from ``run_usd`` / ``day_usd``; over budget a call raises LLMSkipped("skipped: over budget (...)").
Every call, skipped or not, is recorded as an ``llm_call`` event (run ``no-run`` outside a run)
with model, prompt name and version, tokens in/out, latency and cost.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import anthropic
from pydantic import BaseModel, ValidationError
from redis import Redis

from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.llm_budget import Budget, Limits, cost_usd
from orchestra.prompts import Rendered, load_prompt
from orchestra.redaction import UNTRUSTED_RULE, fence, redact
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
NO_RUN = "no-run"  # budget and event bucket for calls made outside a run (e.g. chat parsing)
ACTOR = "llm"
SKIP_NO_KEY = "skipped: no ANTHROPIC_API_KEY, used the deterministic path"
REPAIR_ATTEMPTS = 1  # an invalid structured answer gets one chance to fix itself


class LLMError(OrchestraError):
    """The AI step could not be done; callers fall back to their deterministic path."""


class LLMSkipped(LLMError):
    """The call was not made (no key, or over budget); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LLMFailed(LLMError):
    """The call was made and failed: API error after retries, or output that does not validate."""


class LLM:
    """Prompt in by name, validated model or text out; budgets, retries and provenance included."""

    def __init__(self, settings: Settings, *, redis: Redis, bus: EventBus | None = None,
                 client: anthropic.Anthropic | None = None, max_retries: int = 3,
                 timeout_s: float = 60.0, run_usd: float | None = None,
                 day_usd: float | None = None) -> None:
        self.model = settings.anthropic_model
        self.bus = bus or EventBus(redis)
        self.budget = Budget(redis, Limits(settings.llm_run_token_budget, settings.llm_daily_token_budget,
                                           run_usd if run_usd is not None else settings.llm_run_budget_usd,
                                           day_usd if day_usd is not None else settings.llm_daily_budget_usd))
        self.client = client
        if client is None and settings.anthropic_api_key:
            self.client = anthropic.Anthropic(api_key=settings.anthropic_api_key,
                                              base_url=settings.anthropic_base_url,
                                              max_retries=max_retries, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, *, redis: Redis, **kwargs: Any) -> LLM:
        return cls(settings, redis=redis, **kwargs)

    @property
    def available(self) -> bool:
        """True when an API key is configured (budgets may still skip a call)."""
        return self.client is not None

    def structured(self, prompt: str, variables: Mapping[str, object], schema: type[M], *,
                   run_id: str | None = None, max_tokens: int = 2048) -> M:
        """Ask for ``schema`` through a forced tool call and validate the answer into it."""
        tool = {"name": _tool_name(schema), "description": (schema.__doc__ or schema.__name__).strip(),
                "input_schema": schema.model_json_schema()}
        followup: list[dict[str, Any]] = []
        for attempt in range(REPAIR_ATTEMPTS + 1):
            response = self._call(prompt, variables, run_id, max_tokens, followup=followup,
                                  tools=[tool], tool_choice={"type": "tool", "name": tool["name"]})
            block = next((b for b in response.content if b.type == "tool_use" and b.name == tool["name"]), None)
            if block is None:
                raise LLMFailed(f"the model did not call the {tool['name']} tool")
            try:
                return schema.model_validate(block.input)
            except ValidationError as exc:
                if attempt == REPAIR_ATTEMPTS:
                    raise LLMFailed(f"the model's {tool['name']} output did not validate: "
                                    f"{exc.error_count()} error(s)", hint=str(exc)[:500]) from exc
                followup += _repair_turn(block, exc)
        raise AssertionError("unreachable")

    def text(self, prompt: str, variables: Mapping[str, object], *, run_id: str | None = None,
             max_tokens: int = 2048) -> str:
        """Ask for plain text."""
        response = self._call(prompt, variables, run_id, max_tokens)
        return "".join(b.text for b in response.content if b.type == "text").strip()

    async def astructured(self, prompt: str, variables: Mapping[str, object], schema: type[M], *,
                          run_id: str | None = None, max_tokens: int = 2048) -> M:
        """:meth:`structured` for async code (the blocking call runs in a worker thread)."""
        return await asyncio.to_thread(
            lambda: self.structured(prompt, variables, schema, run_id=run_id, max_tokens=max_tokens))

    async def atext(self, prompt: str, variables: Mapping[str, object], *, run_id: str | None = None,
                    max_tokens: int = 2048) -> str:
        """:meth:`text` for async code."""
        return await asyncio.to_thread(
            lambda: self.text(prompt, variables, run_id=run_id, max_tokens=max_tokens))

    def render(self, prompt: str, variables: Mapping[str, object]) -> Rendered:
        """The prompt as it would be sent: secrets redacted, untrusted variables fenced."""
        clean = {k: redact(str(v)) for k, v in variables.items()}
        rendered = load_prompt(prompt).render(clean, fence=fence)
        system = f"{rendered.system.strip()}\n\n{UNTRUSTED_RULE}"
        return Rendered(rendered.name, rendered.version, system, rendered.user)

    def _call(self, prompt: str, variables: Mapping[str, object], run_id: str | None,
              max_tokens: int, followup: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
        run = run_id or NO_RUN
        rendered = self.render(prompt, variables)
        meta = {"model": self.model, "prompt": rendered.name, "prompt_version": rendered.version}
        if self.client is None:
            self._record(run, meta, outcome="skipped", reason=SKIP_NO_KEY)
            raise LLMSkipped(SKIP_NO_KEY)
        estimate = (len(rendered.system) + len(rendered.user)) // 4
        over = self.budget.over(run, estimate_tokens=estimate)
        if over:
            reason = f"skipped: over budget ({over})"
            self._record(run, meta, outcome="skipped", reason=reason)
            raise LLMSkipped(reason)
        messages = [{"role": "user", "content": rendered.user}, *(followup or [])]
        return self._send(run, rendered.system, messages, meta, max_tokens, extra)

    def _send(self, run: str, system: str, messages: list[dict[str, Any]], meta: dict[str, Any],
              max_tokens: int, extra: dict[str, Any]) -> Any:
        assert self.client is not None
        started = time.monotonic()
        try:
            response = self.client.messages.create(
                model=self.model, max_tokens=max_tokens, system=system,
                messages=messages, **extra)  # type: ignore[arg-type]
        except anthropic.APIError as exc:
            latency = round((time.monotonic() - started) * 1000)
            self._record(run, meta, outcome="error", reason=type(exc).__name__, latency_ms=latency)
            raise LLMFailed(f"the model call failed: {type(exc).__name__}",
                            hint=getattr(exc, "message", str(exc))[:300]) from exc
        latency = round((time.monotonic() - started) * 1000)
        tokens_in, tokens_out = response.usage.input_tokens, response.usage.output_tokens
        usd = cost_usd(response.model or self.model, tokens_in, tokens_out)
        self.budget.spend(run, tokens_in + tokens_out, usd)
        self._record(run, {**meta, "model": response.model or self.model}, outcome="ok",
                     input_tokens=tokens_in, output_tokens=tokens_out, latency_ms=latency,
                     cost_usd=round(usd, 6), stop_reason=response.stop_reason)
        return response

    def _record(self, run: str, meta: dict[str, Any], **data: Any) -> None:
        logger.info("run %s: llm %s v%s %s %s", run, meta["prompt"], meta["prompt_version"],
                    data.get("outcome"), data.get("reason", ""))
        self.bus.emit(run, EventType.LLM_CALL, ACTOR, **meta, **data)


def _repair_turn(block: Any, error: ValidationError) -> list[dict[str, Any]]:
    """The model's invalid tool call and a tool_result telling it what to fix."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors())
    return [{"role": "assistant", "content": [{"type": "tool_use", "id": block.id, "name": block.name,
                                               "input": block.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "is_error": True,
                                          "content": f"Invalid input: {problems[:1500]}. Call {block.name} "
                                                     "again with input that matches its schema."}]}]


def _tool_name(schema: type[BaseModel]) -> str:
    return "record_" + "".join(f"_{c.lower()}" if c.isupper() else c for c in schema.__name__).lstrip("_")
