"""OpenAI chat completions through the ``openai`` SDK (vLLM, llama.cpp's server, Ollama, LM Studio, TGI).

Structured answers are asked for with ``response_format`` and a JSON schema: servers that support it
constrain the grammar, so even a small model answers valid JSON. The schema is also stated in the
system prompt for servers that ignore ``response_format``.
"""
from __future__ import annotations

import json
from typing import Any

import openai

from orchestra.llm.wire import Answer, Schema, WireError


class OpenAIWire:
    protocol = "openai"

    def __init__(self, *, api_key: str | None, base_url: str | None, max_retries: int, timeout_s: float) -> None:
        # A local server that wants no key still needs the header filled in.
        self.client = openai.OpenAI(api_key=api_key or "no-key", base_url=base_url, max_retries=max_retries,
                                    timeout=timeout_s)

    def ask(self, *, model: str, system: str, messages: list[dict[str, Any]], max_tokens: int,
            schema: Schema | None) -> Answer:
        extra: dict[str, Any] = {}
        if schema is not None:
            system = f"{system}\n\n{_schema_rule(schema)}"
            extra["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema.name, "description": schema.description, "schema": schema.json_schema}}
        try:
            conversation: Any = [{"role": "system", "content": system}, *messages]
            response = self.client.chat.completions.create(model=model, max_tokens=max_tokens,
                                                           messages=conversation, **extra)
        except openai.APIError as exc:
            raise WireError(type(exc).__name__, getattr(exc, "message", str(exc))[:300]) from exc
        return _answer(response, model, schema)

    def repair(self, answer: Answer, schema: Schema, problems: str) -> list[dict[str, Any]]:
        return [{"role": "assistant", "content": answer.text},
                {"role": "user", "content": f"That answer is invalid: {problems}. Answer again with one JSON "
                                            f"object that matches the {schema.name} schema, and nothing else."}]


def _schema_rule(schema: Schema) -> str:
    return (f"Answer with one JSON object ({schema.name}: {schema.description}) that matches this JSON schema, "
            f"and nothing else:\n{json.dumps(schema.json_schema)}")


def _answer(response: Any, model: str, schema: Schema | None) -> Answer:
    choice = response.choices[0] if response.choices else None
    text = (choice.message.content or "").strip() if choice else ""
    usage = response.usage
    tokens_in = usage.prompt_tokens if usage and usage.prompt_tokens is not None else 0
    tokens_out = usage.completion_tokens if usage and usage.completion_tokens is not None else len(text) // 4
    data = _json_object(text) if schema is not None else None
    return Answer(text, data, tokens_in, tokens_out, response.model or model,
                  choice.finish_reason if choice else None)


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text`` (servers without grammar support may wrap it in a code fence)."""
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
