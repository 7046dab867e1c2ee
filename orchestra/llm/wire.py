"""What the client needs of a wire protocol: one request in, one :class:`Answer` out.

Two protocols implement it: the Anthropic Messages API (:mod:`orchestra.llm.anthropic_wire`, also spoken
by Ollama and llama.cpp's server at ``/v1/messages``) and OpenAI chat completions
(:mod:`orchestra.llm.openai_wire`: vLLM, llama.cpp's server, Ollama, LM Studio, TGI).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Schema:
    """A structured answer's name, description and JSON schema."""

    name: str
    description: str
    json_schema: dict[str, Any]


@dataclass
class Answer:
    """One reply: its text, the structured data when one was asked for (None when missing or not JSON)."""

    text: str
    data: dict[str, Any] | None
    input_tokens: int
    output_tokens: int
    model: str
    stop_reason: str | None
    turn: list[dict[str, Any]] = field(default_factory=list)  # the reply as the protocol writes it back


class WireError(Exception):
    """The server could not be reached or refused the call (after the SDK's own retries)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Wire(Protocol):
    """One protocol: send a conversation, and write a repair turn for an answer that did not validate."""

    protocol: str

    def ask(self, *, model: str, system: str, messages: list[dict[str, Any]], max_tokens: int,
            schema: Schema | None) -> Answer: ...

    def repair(self, answer: Answer, schema: Schema, problems: str) -> list[dict[str, Any]]: ...
