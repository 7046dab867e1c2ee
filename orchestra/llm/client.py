"""The one LLM client of the product, over the Anthropic Messages API or OpenAI chat completions.

Usage::

    from orchestra.llm import LLM, LLMSkipped, LLMFailed

    llm = LLM.from_settings(settings, redis=redis)         # redis: budgets + provenance events
    if not llm.available:                                   # no model configured
        ...                                                 # deterministic path, and say so
    try:
        intent = llm.structured("parse_intent", {"text": text, "intents": names},
                                IntentGuess, run_id=run_id)  # a validated pydantic model
        answer = llm.text("explain_run", {...}, run_id=run_id)
        guess = llm.structured("parse_intent", ..., fast=True)  # the small, fast model (chat)
    except LLMSkipped as skip:                              # no model, or over budget
        logger.info("run %s: %s", run_id, skip.reason)      # -> deterministic path
    except LLMFailed:                                       # API error after retries, bad output
        ...

``astructured`` / ``atext`` are the same calls for async code (run in a worker thread).
The wire protocol (``ORCHESTRA_LLM_PROTOCOL``: anthropic, or openai for vLLM, llama.cpp, Ollama,
LM Studio and TGI) only carries the request: prompts, budgets, validation and provenance are the
same whichever model answers. Chat understanding may use a smaller model (``ORCHESTRA_LLM_MODEL_FAST``).
Prompts come from ``prompts/<name>.md`` (see orchestra.prompts); every variable is redacted of
secrets and the prompt's ``untrusted`` variables are fenced as data. 429 and 5xx answers are
retried with backoff by the SDK (``max_retries``); a structured answer that does not validate (or is
not JSON) gets one repair turn. Token budgets per run and per UTC day come from Settings, optional dollar budgets
from ``run_usd`` / ``day_usd``; over budget a call raises LLMSkipped("skipped: over budget (...)").
Every call, skipped or not, is recorded as an ``llm_call`` event (run ``no-run`` outside a run)
with protocol, model, prompt name and version, tokens in/out, latency and cost (local models cost
nothing unless ``ORCHESTRA_LLM_PRICE`` says otherwise).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from redis import Redis

from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.llm.budget import Budget, Limits, cost_usd
from orchestra.llm.wire import Answer, Schema, Wire, WireError
from orchestra.prompts import Rendered, load_prompt
from orchestra.redaction import UNTRUSTED_RULE, fence, hold_settings, redact
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
NO_RUN = "no-run"  # budget and event bucket for calls made outside a run (e.g. chat parsing)
ACTOR = "llm"
SKIP_NO_MODEL = ("skipped: no model configured (ANTHROPIC_API_KEY, or ORCHESTRA_LLM_URL for a local one), "
                 "used the deterministic path")
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
                 wire: Wire | None = None, max_retries: int = 3, timeout_s: float = 60.0,
                 run_usd: float | None = None, day_usd: float | None = None) -> None:
        self.settings = settings
        hold_settings(settings)  # its credentials never reach a prompt, whatever their shape
        self.bus = bus or EventBus(redis)
        self.budget = Budget(redis, Limits(settings.llm_run_token_budget, settings.llm_daily_token_budget,
                                           run_usd if run_usd is not None else settings.llm_run_budget_usd,
                                           day_usd if day_usd is not None else settings.llm_daily_budget_usd))
        self.wire = wire
        if wire is None and settings.llm_configured:
            self.wire = open_wire(settings, max_retries=max_retries, timeout_s=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, *, redis: Redis, **kwargs: Any) -> LLM:
        return cls(settings, redis=redis, **kwargs)

    @property
    def available(self) -> bool:
        """True when a model is configured (budgets may still skip a call)."""
        return self.wire is not None

    @property
    def model(self) -> str:
        return self.settings.llm_model

    def structured(self, prompt: str, variables: Mapping[str, object], schema: type[M], *,
                   run_id: str | None = None, max_tokens: int = 2048, fast: bool = False) -> M:
        """Ask for ``schema`` (a forced tool call, or a JSON-schema response) and validate the answer into it."""
        spec = Schema(_tool_name(schema), (schema.__doc__ or schema.__name__).strip(), schema.model_json_schema())
        followup: list[dict[str, Any]] = []
        for attempt in range(REPAIR_ATTEMPTS + 1):
            answer = self._call(prompt, variables, run_id, max_tokens, fast, followup=followup, schema=spec)
            if answer.data is None:
                failure, problems, error = f"the model did not call the {spec.name} tool (or answer its schema)", \
                    f"no {spec.name} answer (a JSON object matching the schema) was given", None
            else:
                try:
                    return schema.model_validate(answer.data)
                except ValidationError as exc:
                    failure, problems, error = (f"the model's {spec.name} output did not validate: "
                                                f"{exc.error_count()} error(s)", _problem_list(exc), exc)
            repair = self.wire.repair(answer, spec, redact(problems[:1500])) if self.wire else []
            if attempt == REPAIR_ATTEMPTS or not repair:
                raise LLMFailed(failure, hint=str(error or problems)[:500]) from error
            followup += repair
        raise AssertionError("unreachable")

    def text(self, prompt: str, variables: Mapping[str, object], *, run_id: str | None = None,
             max_tokens: int = 2048, fast: bool = False) -> str:
        """Ask for plain text."""
        return self._call(prompt, variables, run_id, max_tokens, fast).text

    async def astructured(self, prompt: str, variables: Mapping[str, object], schema: type[M], *,
                          run_id: str | None = None, max_tokens: int = 2048, fast: bool = False) -> M:
        """:meth:`structured` for async code (the blocking call runs in a worker thread)."""
        return await asyncio.to_thread(
            lambda: self.structured(prompt, variables, schema, run_id=run_id, max_tokens=max_tokens, fast=fast))

    async def atext(self, prompt: str, variables: Mapping[str, object], *, run_id: str | None = None,
                    max_tokens: int = 2048, fast: bool = False) -> str:
        """:meth:`text` for async code."""
        return await asyncio.to_thread(
            lambda: self.text(prompt, variables, run_id=run_id, max_tokens=max_tokens, fast=fast))

    def render(self, prompt: str, variables: Mapping[str, object]) -> Rendered:
        """The prompt as it would be sent: secrets redacted, untrusted variables fenced."""
        clean = {k: redact(str(v)) for k, v in variables.items()}
        rendered = load_prompt(prompt).render(clean, fence=fence)
        system = f"{rendered.system.strip()}\n\n{UNTRUSTED_RULE}"
        return Rendered(rendered.name, rendered.version, system, rendered.user)

    def _call(self, prompt: str, variables: Mapping[str, object], run_id: str | None, max_tokens: int,
              fast: bool, followup: list[dict[str, Any]] | None = None, schema: Schema | None = None) -> Answer:
        run = run_id or NO_RUN
        rendered = self.render(prompt, variables)
        model = self.settings.llm_model_fast if fast and self.settings.llm_model_fast else self.model
        meta = {"protocol": self.settings.llm_protocol, "model": model, "prompt": rendered.name,
                "prompt_version": rendered.version}
        if self.wire is None:
            self._record(run, meta, outcome="skipped", reason=SKIP_NO_MODEL)
            raise LLMSkipped(SKIP_NO_MODEL)
        estimate = (len(rendered.system) + len(rendered.user)) // 4
        over = self.budget.over(run, estimate_tokens=estimate)
        if over:
            reason = f"skipped: over budget ({over})"
            self._record(run, meta, outcome="skipped", reason=reason)
            raise LLMSkipped(reason)
        messages = [{"role": "user", "content": rendered.user}, *(followup or [])]
        return self._send(run, rendered.system, messages, meta, max_tokens, schema)

    def _send(self, run: str, system: str, messages: list[dict[str, Any]], meta: dict[str, Any],
              max_tokens: int, schema: Schema | None) -> Answer:
        assert self.wire is not None
        started = time.monotonic()
        try:
            answer = self.wire.ask(model=meta["model"], system=system, messages=messages, max_tokens=max_tokens,
                                   schema=schema)
        except WireError as exc:
            latency = round((time.monotonic() - started) * 1000)
            self._record(run, meta, outcome="error", reason=exc.kind, latency_ms=latency)
            raise LLMFailed(f"the model call failed: {exc.kind}", hint=exc.message) from exc
        latency = round((time.monotonic() - started) * 1000)
        usd = cost_usd(answer.model or meta["model"], answer.input_tokens, answer.output_tokens,
                       price=self.settings.llm_price)
        self.budget.spend(run, answer.input_tokens + answer.output_tokens, usd)
        self._record(run, {**meta, "model": answer.model or meta["model"]}, outcome="ok",
                     input_tokens=answer.input_tokens, output_tokens=answer.output_tokens, latency_ms=latency,
                     cost_usd=round(usd, 6), stop_reason=answer.stop_reason)
        return answer

    def _record(self, run: str, meta: dict[str, Any], **data: Any) -> None:
        logger.info("run %s: llm %s v%s %s %s", run, meta["prompt"], meta["prompt_version"],
                    data.get("outcome"), data.get("reason", ""))
        self.bus.emit(run, EventType.LLM_CALL, ACTOR, **meta, **data)


def open_wire(settings: Settings, *, max_retries: int = 3, timeout_s: float = 60.0) -> Wire:
    """The wire for the configured protocol (the SDKs are imported only when a model is configured)."""
    if settings.llm_protocol == "openai":
        from orchestra.llm.openai_wire import OpenAIWire

        return OpenAIWire(api_key=settings.llm_api_key, base_url=settings.llm_url, max_retries=max_retries,
                          timeout_s=timeout_s)
    from orchestra.llm.anthropic_wire import AnthropicWire

    return AnthropicWire(api_key=settings.llm_api_key, base_url=settings.llm_url, max_retries=max_retries,
                         timeout_s=timeout_s)


def _problem_list(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors())


def _tool_name(schema: type[BaseModel]) -> str:
    return "record_" + "".join(f"_{c.lower()}" if c.isupper() else c for c in schema.__name__).lstrip("_")
