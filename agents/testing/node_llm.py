"""Asking the LLM for Vitest/Jest tests of one exported function (prompts/generate_tests_node.md).

The function's source goes to the model fenced as untrusted data. What comes back is a candidate
only: one that reaches outside a unit test (environment, processes, network, dynamic code, any
import but the module under test and the runner) is refused without being run, one that does not
import the function from the given path cannot be retargeted at mutants and is refused too; the
rest go to the prover like the deterministic ones.
"""
from __future__ import annotations

import logging
import re

from pydantic import BaseModel, Field

from agents.testing.jsfuncs import JsFunction
from orchestra.llm import LLM, NO_RUN, LLMError

logger = logging.getLogger(__name__)

MAX_LLM_TESTS = 5
MAX_SOURCE_CHARS = 6000
# What a unit test of a function has no use for, and an exfiltrating one needs: refused without running it.
OUTSIDE = re.compile(r"""\b(?:process\s*(?:\.\s*(?:env|exit|kill|binding|dlopen|mainModule)|\[)|child_process"""
                     r"""|fetch\s*\(|XMLHttpRequest|WebSocket|eval\s*\(|Function\s*\(|import\s*\(|globalThis)"""
                     r"""|\.\s*constructor\b|require\s*\(\s*(?!["'][./])|from\s+["'](?![./]|vitest["']|@jest/globals["'])""")


class GeneratedNodeTest(BaseModel):
    """One test file."""

    name: str = Field(description="short kebab-case name for the test file")
    code: str = Field(description="complete Vitest or Jest test file: imports and tests")


class GeneratedNodeTests(BaseModel):
    """Test files for the given function."""

    tests: list[GeneratedNodeTest] = Field(default_factory=list)


def ask(target: JsFunction, text: str, spec: str, llm: LLM, *, runner: str,
        run_id: str | None) -> list[tuple[str, str]]:
    """The model's test files for ``target`` (in module ``text``, imported as ``spec``): (code, refusal or "")."""
    start = sum(len(line) for line in text.splitlines(keepends=True)[:target.line - 1])
    source = text[start:target.body[1]][:MAX_SOURCE_CHARS]
    try:
        out = llm.structured("generate_tests_node", {"module": spec, "function": target.name, "source": source,
                                                     "signature": target.params, "runner": runner},
                             GeneratedNodeTests, run_id=run_id, max_tokens=4096)
    except LLMError as exc:
        logger.info("run %s: no LLM tests for %s: %s", run_id, target.name, exc)
        return []
    return [(test.code, refusal(test.code, spec)) for test in out.tests[:MAX_LLM_TESTS]]


def refusal(code: str, spec: str) -> str:
    """Why a model-written test is not run at all, or "" when it may be."""
    reach = OUTSIDE.search(code)
    if reach:
        return f"refused without running it: it uses {reach.group().strip()}"
    if f'"{spec}"' not in code and f"'{spec}'" not in code:
        return f"does not import the function from {spec}"
    return ""


def tokens(llm: LLM, run_id: str | None) -> int:
    """Tokens the run has used so far (the difference around generation is what it cost)."""
    return int(llm.budget.used(run_id or NO_RUN)["run_tokens"])
