"""A model that answers as the attacker wants: the prompt-injection corpus, replayed by the fake Messages API.

    cases = load_corpus()                          # tests/fixtures/injection/corpus.yaml
    replay(server, case, names)                    # every call of the case's path gets its hostile answer
    sent = sent_texts(server)                      # what the model was shown: system prompts and messages

A case names the place its text comes from (chat, pr_title, pr_body, commit_message, diff, test_output,
crash_log, dockerfile), the product path that reads it (understand, explain, review, build, testgen),
the text, and the answer. ``{{name}}`` placeholders in the text and the answer are filled from ``names``
(the run ids and secret values of the test's world) and, in answers, ``{{system_prompt}}`` with the
system prompt of the request being answered: the answer the attacker hoped the model would echo.
A build answer may give ``dockerfile_edits`` ([old, new] pairs) applied to the Dockerfile the request
shows, as a model would edit what it was given.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from orchestra.redaction import redact
from tests.support.fake_anthropic import FakeAnthropic

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "injection" / "corpus.yaml"
PLACES = ("chat", "pr_title", "pr_body", "commit_message", "diff", "test_output", "crash_log", "dockerfile")
PATHS = ("understand", "explain", "review", "build", "testgen")
TOOLS = {"understand": "record_intent_guess", "review": "record_review_output",
         "build": "record_dockerfile_proposal", "testgen": "record_generated_tests"}  # explain asks for text
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
MARKER = re.compile(r"</?untrusted-data[^>]*>")  # what the fence removes from the text it wraps
FENCE = re.compile(r'<untrusted-data name="[^"]+" id="([0-9a-f]+)">\n(.*?)\n</untrusted-data id="\1">', re.DOTALL)
DOCKERFILE_SHOWN = "The generated Dockerfile:\n"


@dataclass(frozen=True)
class Case:
    """One hostile text, where it comes from, and what the attacker wants the model to answer."""

    id: str
    place: str
    path: str
    text: str
    answer: Any
    expect: str
    because: str  # words of the recorded refusal
    reaches_model: bool = True  # False: the product never shows this text to a model
    file: str | None = None  # review and build: where the text is written ({{text}}: in the name)
    gate: str | None = None  # review: passed | failed, as the rule checks alone decide
    redacted: tuple[str, ...] = field(default_factory=tuple)  # values in the text that must never be sent

    def filled(self, names: Mapping[str, str]) -> Case:
        """The case with the world's run ids in its text and file name (answers are filled when replayed)."""
        text = fill(self.text, names)
        return replace(self, text=text, file=self.file.replace("{{text}}", text) if self.file else None)

    @property
    def content(self) -> str:
        """What the case's file holds: its text, or a line of notes when the text is the file's name."""
        return "notes\n" if self.file and self.text in self.file else self.text

    def probes(self) -> list[str]:
        """Lines of the text that would be recognised in a prompt (not rewritten by redaction or fencing)."""
        pieces = [p.strip() for line in self.text.splitlines() for p in MARKER.split(line)]
        return [p for p in pieces if len(p) >= 12 and (" " in p or not p.isascii()) and redact(p) == p]


def load_corpus(path: Path = CORPUS) -> list[Case]:
    """Every case of the corpus, checked for the fields and values the tests rely on."""
    cases = [Case(**{**raw, "redacted": tuple(raw.get("redacted", ()))}) for raw in yaml.safe_load(path.read_text())]
    for case in cases:
        assert case.place in PLACES and case.path in PATHS, case.id
    assert len({c.id for c in cases}) == len(cases), "case ids must be unique"
    return cases


def fill(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` (a string, or lists and mappings of them) with its ``{{name}}`` placeholders filled."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: names[m.group(1)], value)
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def replay(server: FakeAnthropic, case: Case, names: Mapping[str, str]) -> None:
    """Have ``server`` answer every call of the case's path with the case's hostile answer."""
    def answer(body: dict[str, Any]) -> Any:
        return fill(case.answer, {**names, "system_prompt": body["system"]})

    tool = TOOLS.get(case.path)
    if tool is None:
        server.on_text(answer)
    elif case.path == "build":
        server.on_tool(tool, lambda body: proposal(answer(body), body))
    else:
        server.on_tool(tool, answer)


def proposal(answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A Dockerfile proposal: the Dockerfile the request shows, with the answer's edits made."""
    if "dockerfile_edits" not in answer:
        return answer
    dockerfile = user_text(body).split(DOCKERFILE_SHOWN, 1)[1]
    for old, new in answer["dockerfile_edits"]:
        assert old in dockerfile, f"the edit {old!r} does not apply to the Dockerfile shown"
        dockerfile = dockerfile.replace(old, new)
    return {"dockerfile": dockerfile, "changes": answer.get("changes", ["small fixes"])}


def user_text(body: dict[str, Any]) -> str:
    """The text of a request's messages (string contents, text blocks and tool results)."""
    parts = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
            continue
        for block in content:
            inner = block.get("text") or block.get("content") or ""
            parts.append(inner if isinstance(inner, str) else str(inner))
    return "\n".join(parts)


def sent_texts(server: FakeAnthropic) -> list[str]:
    """Everything the model was shown, one string per request: its system prompt and its messages."""
    return [f"{r.body.get('system', '')}\n{user_text(r.body)}" for r in server.requests]


def outside_fences(text: str) -> str:
    """``text`` without its fenced (untrusted) parts: what the model is told to take as instructions."""
    return FENCE.sub("", text)


def inside_fences(text: str) -> str:
    return "\n".join(m.group(2) for m in FENCE.finditer(text))
