"""What the templates cannot make (``resources.extra``, in words), written by the configured model as ``extra.tf``.

Templates first: the generated files are made and written without a model. Only when ``resources.extra`` asks
for more is the model asked for ONE more file, given the generated files' resource addresses and variables.
Its text is untrusted: :func:`screen` refuses, before any Terraform command sees it, a file over
:data:`MAX_CHARS`, anything but ASCII, ``\\u`` escapes (which could spell a keyword inside a label), block
comments, a ``terraform``/``provider``/``backend``/``module`` block, a provisioner (``local-exec``,
``remote-exec``), ``import``/``moved``/``removed`` blocks (which would touch the generated resources' state),
a resource or data source of any provider but AWS (``external``, ``http``, ``local``, ``null`` ...), and what
looks like a secret. A file that passes is then checked with the generated ones by exactly the stage's own
checks (fmt -check, init, validate, the checkov policy scan's blocking set, plan); if they fail, ``extra.tf`` is
deleted, the generated files are checked again without it, and the thread says why. With no model configured,
or when the model call fails, the generated files go on alone and the thread says the extra was not made.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, Field

from agents.context import AgentContext, StageResult
from agents.iac.generate.spec import Spec
from orchestra.llm import LLM, LLMError
from orchestra.redaction import redact

PROMPT = "generate_terraform"
FILE = "extra.tf"
MAX_CHARS = 12_000
_ESCAPE = re.compile(r"\\[uU]")
_DENIED_WORDS = re.compile(r"\b(provisioner|local-exec|remote-exec|connection)\b")
_DENIED_NAMED = re.compile(r"\b(provider|backend|module)\s*(?:=|(?:\"?[A-Za-z0-9_-]+\"?\s*)?\{)")
_DENIED_BLOCKS = re.compile(r"^\s*(terraform|import|moved|removed|check|ephemeral|cloud)\b(?!\s*=)", re.MULTILINE)
_TYPED = re.compile(r"\b(resource|data)\s+\"?([A-Za-z0-9_-]+)\"?\s+\"?[A-Za-z0-9_-]+\"?\s*\{")
_ADDRESS = re.compile(r"^(resource|data)\s+\"([a-z0-9_]+)\"\s+\"([A-Za-z0-9_-]+)\"", re.MULTILINE)
_VARIABLE = re.compile(r"^variable\s+\"([a-z0-9_]+)\"", re.MULTILINE)


class ExtraTerraform(BaseModel):
    """One extra Terraform file for what the generated ones do not make, and one line saying what it adds."""

    terraform: str = Field(description="the complete extra.tf: only resource, data, locals and output blocks")
    summary: str = Field(default="", description="one short line: what the file adds")


def screen(text: str) -> list[str]:
    """Why the model's ``text`` may not reach Terraform (empty: it may be checked)."""
    if len(text) > MAX_CHARS:
        return [f"it is {len(text)} characters, over the {MAX_CHARS} allowed"]
    problems = []
    if not text.isascii():
        problems.append("it has characters other than ASCII")
    if _ESCAPE.search(text):
        problems.append("it has \\u escapes")
    if "/*" in text:
        problems.append("it has a block comment")
    words = sorted(set(_DENIED_WORDS.findall(text)) | set(_DENIED_NAMED.findall(text)))
    if words:
        problems.append(f"it has {', '.join(words)} (not allowed: only resource, data, locals and output blocks)")
    blocks = sorted(set(_DENIED_BLOCKS.findall(text)))
    if blocks:
        problems.append(f"it has a {', '.join(blocks)} block")
    others = sorted({kind for _, kind in _TYPED.findall(text) if not kind.startswith("aws_")})
    if others:
        problems.append(f"it uses {', '.join(others)} (only aws_ resources and data sources are allowed)")
    if not _TYPED.search(text):
        problems.append("it declares no aws_ resource or data source")
    if redact(text) != text:
        problems.append("it has what looks like a secret")
    return problems


def addresses(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """The generated files' resource and data addresses, and their variables, for the prompt."""
    found, variables = [], []
    for text in files.values():
        found += [f"{'data.' if mode == 'data' else ''}{kind}.{name}" for mode, kind, name in _ADDRESS.findall(text)]
        variables += _VARIABLE.findall(text)
    return sorted(found), sorted(variables)


def with_extra(ctx: AgentContext, spec: Spec, files: dict[str, str], folder: Path,
               check: Callable[[], StageResult]) -> StageResult:
    """``check()`` of the generated files, with the model's ``extra.tf`` when ``resources.extra`` asks for one
    and it passes; the result says what became of the extra either way."""
    wanted = ctx.config.resources.extra.strip()
    if not wanted:
        return check()
    shown = f"infrastructure/generated/{FILE}"
    text, why = _ask(ctx, spec, files, wanted)
    if text is None:
        return _noted(ctx, check(), {"kept": False, "reason": why}, f"resources.extra not made: {why}")
    (folder / FILE).write_text(text)
    ctx.progress(f"resources.extra: the model wrote {shown} ({why}); checking it with the generated files")
    result = check()
    if result.passed:
        return _noted(ctx, result, {"kept": True, "file": shown, "text": text, "summary": why},
                      f"resources.extra: {shown} written by the model ({why}) passed the same checks and is kept: "
                      "review it")
    (folder / FILE).unlink()
    reason = f"{shown} failed the checks and was discarded: {result.summary}"
    ctx.progress(f"resources.extra: {reason}; checking the generated files without it")
    return _noted(ctx, check(), {"kept": False, "reason": reason, "text": text}, f"resources.extra: {reason}")


def _ask(ctx: AgentContext, spec: Spec, files: dict[str, str], wanted: str) -> tuple[str | None, str]:
    """The model's extra file and its summary, or None and why there is none."""
    llm = LLM.from_settings(ctx.settings, redis=ctx.redis, bus=ctx.bus)
    if not llm.available:
        return None, ("no model is configured (ANTHROPIC_API_KEY, or ORCHESTRA_LLM_URL for a local one); the "
                      "generated files were checked without it: configure a model, or write the Terraform yourself "
                      "under infrastructure.path")
    found, variables = addresses(files)
    try:
        answer = llm.structured(PROMPT, {"project": spec.project, "environment": spec.environment,
                                         "resources": "\n".join(found), "variables": ", ".join(variables),
                                         "request": wanted}, ExtraTerraform, run_id=ctx.run.id, max_tokens=4096)
    except LLMError as exc:
        return None, f"the model call failed ({exc.message}); the generated files were checked without it"
    text = answer.terraform.strip() + "\n"
    problems = screen(text)
    if problems:
        return None, ("the model's file was refused before Terraform ran: " + "; ".join(problems)
                      + "; the generated files were checked without it")
    return text, " ".join(answer.summary.split())[:200] or "no summary given"


def _noted(ctx: AgentContext, result: StageResult, extra: dict[str, object], note: str) -> StageResult:
    ctx.progress(note)
    return replace(result, summary=f"{result.summary}; {note}", data={**result.data, "extra": extra})
