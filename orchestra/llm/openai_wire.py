"""OpenAI chat completions through the ``openai`` SDK (vLLM, llama.cpp's server, Ollama, LM Studio, TGI).

Structured answers are asked for with ``response_format`` and a JSON schema: servers that support it
constrain the grammar, so even a small model answers valid JSON. OpenAI, vLLM and Ollama take the
standard ``{"type": "json_schema"}``; llama-cpp-python's server takes only its own
``{"type": "json_object", "schema": ...}``: a server that rejects the first is asked the second way from
then on. The schema is also stated in the system prompt for servers that ignore ``response_format``.
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
        self.formats = list(FORMATS)  # the response_format styles still worth trying, best first

    def ask(self, *, model: str, system: str, messages: list[dict[str, Any]], max_tokens: int,
            schema: Schema | None) -> Answer:
        if schema is not None:
            system = f"{system}\n\n{_schema_rule(schema)}"
        conversation: Any = [{"role": "system", "content": system}, *messages]
        while True:
            extra: Any = {"response_format": FORMATS[self.formats[0]](schema)} if schema is not None else {}
            try:
                response = self.client.chat.completions.create(model=model, max_tokens=max_tokens,
                                                               messages=conversation, **extra)
                return _answer(response, model, schema)
            except openai.APIStatusError as exc:
                if not (schema is not None and _refused_format(exc) and len(self.formats) > 1):
                    raise WireError(type(exc).__name__, exc.message[:300]) from exc
                self.formats.pop(0)
            except openai.APIError as exc:
                raise WireError(type(exc).__name__, getattr(exc, "message", str(exc))[:300]) from exc

    def repair(self, answer: Answer, schema: Schema, problems: str) -> list[dict[str, Any]]:
        return [{"role": "assistant", "content": answer.text},
                {"role": "user", "content": f"That answer is invalid: {problems}. Answer again with one JSON "
                                            f"object that matches the {schema.name} schema, and nothing else."}]


def _json_schema_format(schema: Schema | None) -> dict[str, Any]:
    assert schema is not None
    return {"type": "json_schema", "json_schema": {"name": schema.name, "description": schema.description,
                                                   "schema": schema.json_schema}}


def _json_object_format(schema: Schema | None) -> dict[str, Any]:
    assert schema is not None
    return {"type": "json_object", "schema": schema.json_schema}


FORMATS = {"json_schema": _json_schema_format, "json_object": _json_object_format}


def _refused_format(exc: openai.APIStatusError) -> bool:
    """The server said no to the response_format itself (llama-cpp-python answers 500 with the reason)."""
    return exc.status_code in (400, 422, 500) and "response_format" in str(exc.message) + str(exc.body)


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
