"""The Anthropic Messages API through the ``anthropic`` SDK; structured answers come from a forced tool call."""
from __future__ import annotations

from typing import Any

import anthropic

from orchestra.llm.wire import Answer, Schema, WireError


class AnthropicWire:
    protocol = "anthropic"

    def __init__(self, *, api_key: str | None, base_url: str | None, max_retries: int, timeout_s: float) -> None:
        # Local servers (Ollama, llama.cpp) take any key; the SDK wants one.
        self.client = anthropic.Anthropic(api_key=api_key or "no-key", base_url=base_url,
                                          max_retries=max_retries, timeout=timeout_s)

    def ask(self, *, model: str, system: str, messages: list[dict[str, Any]], max_tokens: int,
            schema: Schema | None) -> Answer:
        extra: dict[str, Any] = {}
        if schema is not None:
            extra = {"tools": [{"name": schema.name, "description": schema.description,
                                "input_schema": schema.json_schema}],
                     "tool_choice": {"type": "tool", "name": schema.name}}
        try:
            response = self.client.messages.create(model=model, max_tokens=max_tokens, system=system,
                                                   messages=messages, **extra)  # type: ignore[arg-type]
        except anthropic.APIError as exc:
            raise WireError(type(exc).__name__, getattr(exc, "message", str(exc))[:300]) from exc
        return _answer(response, schema)

    def repair(self, answer: Answer, schema: Schema, problems: str) -> list[dict[str, Any]]:
        """The model's invalid tool call and a tool_result telling it what to fix."""
        call = next((b for b in answer.turn if b.get("type") == "tool_use"), None)
        if call is None:
            return []
        return [{"role": "assistant", "content": [call]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "is_error": True,
                                              "content": f"Invalid input: {problems}. Call {schema.name} "
                                                         "again with input that matches its schema."}]}]


def _answer(response: Any, schema: Schema | None) -> Answer:
    text = "".join(b.text for b in response.content if b.type == "text").strip()
    call = next((b for b in response.content if b.type == "tool_use" and schema and b.name == schema.name), None)
    turn = [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}] if call else []
    return Answer(text, dict(call.input) if call is not None else None, response.usage.input_tokens,
                  response.usage.output_tokens, response.model, response.stop_reason, turn)
