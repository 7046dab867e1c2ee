"""Optional LLM refinement of a generated Dockerfile: the model proposes, the checks decide.

A proposal is used only if it keeps the template's base images, USER lines and health check,
reaches no host and uses no network tool the template does not, carries nothing that looks like
a secret and passes hadolint; otherwise the template is used and the reason is reported.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from agents.build.dockerfile import lint
from agents.findings import Severity
from orchestra.llm import LLM, LLMError
from orchestra.redaction import redact

logger = logging.getLogger(__name__)

PROMPT = "refine_dockerfile"
MAX_FILES = 200
_FROM = re.compile(r"^\s*FROM\s+(\S+)", re.IGNORECASE | re.MULTILINE)
_USER = re.compile(r"^\s*USER\s+(\S+)", re.IGNORECASE | re.MULTILINE)
_FETCH = re.compile(r"^\s*ADD\s+https?://|(curl|wget)[^\n|]*\|\s*(ba)?sh", re.IGNORECASE | re.MULTILINE)
_HEALTHCHECK = re.compile(r"^\s*HEALTHCHECK\s+(?!NONE\b)", re.IGNORECASE | re.MULTILINE)
_HOST = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^\s/@'\"]*@)?([^\s/:'\"]+)", re.IGNORECASE)
_NET_TOOL = re.compile(r"\b(curl|wget|nc|ncat|netcat|socat|telnet|ssh|scp|sftp|ftp|rsync)\b")


class DockerfileProposal(BaseModel):
    """A refined Dockerfile and one short line per change."""

    dockerfile: str = Field(description="the complete Dockerfile")
    changes: list[str] = Field(default_factory=list, description="one short line per change")


@dataclass(frozen=True)
class Refined:
    text: str
    source: str  # template | llm
    note: str


def refine(text: str, *, service: str, stack: str, service_dir: Path, llm: LLM | None,
           run_id: str | None = None) -> Refined:
    """The template, or the model's refinement of it when one is configured and passes the checks."""
    if llm is None or not llm.available:
        return Refined(text, "template", "template used as is (no LLM configured)")
    try:
        proposal = llm.structured(PROMPT, {"service": service, "stack": stack, "dockerfile": text,
                                           "files": _listing(service_dir)}, DockerfileProposal, run_id=run_id)
    except LLMError as exc:
        logger.info("run %s: Dockerfile refinement for %s not done: %s", run_id, service, exc)
        return Refined(text, "template", f"template used (LLM refinement not done: {exc.message})")
    problems = check_proposal(text, proposal.dockerfile)
    if problems:
        logger.info("run %s: Dockerfile proposal for %s rejected: %s", run_id, service, problems)
        return Refined(text, "template", "template used (LLM proposal rejected: " + "; ".join(problems) + ")")
    if proposal.dockerfile.strip() == text.strip():
        return Refined(text, "template", "template kept (the LLM proposed no change)")
    changes = "; ".join(proposal.changes[:5]) or "unspecified changes"
    return Refined(proposal.dockerfile.rstrip() + "\n", "llm", f"refined by the LLM: {changes}")


def check_proposal(original: str, proposed: str) -> list[str]:
    """Why a proposed Dockerfile may not replace the template (empty: it may)."""
    problems = []
    if _FROM.findall(proposed) != _FROM.findall(original):
        problems.append("it changes the base images")
    users = _USER.findall(proposed)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("it does not end with a non-root USER")
    elif users != _USER.findall(original):
        problems.append("it changes the USER lines")
    if not _HEALTHCHECK.search(proposed):
        problems.append("it has no HEALTHCHECK")
    if _FETCH.search(proposed):
        problems.append("it downloads code from a URL")
    problems += _reach(original, proposed)
    if redact(proposed) != proposed:
        problems.append("it contains what looks like a secret")
    blocking = [f.rule for f in lint(proposed) if f.severity is Severity.ERROR]
    if blocking:
        problems.append("hadolint: " + ", ".join(sorted(set(blocking))))
    return problems


def _reach(original: str, proposed: str) -> list[str]:
    """Hosts and network tools the proposal adds to the template's (a download or an upload)."""
    hosts = sorted(set(_HOST.findall(proposed)) - set(_HOST.findall(original)))
    tools = sorted(set(_NET_TOOL.findall(proposed)) - set(_NET_TOOL.findall(original)))
    return ([f"it reaches {', '.join(hosts)}"] if hosts else []) + \
        ([f"it adds the network tool(s) {', '.join(tools)}"] if tools else [])


def _listing(service_dir: Path) -> str:
    names = sorted(str(p.relative_to(service_dir)) for p in service_dir.rglob("*")
                   if p.is_file() and not any(part.startswith(".") or part in ("node_modules", "__pycache__")
                                              for part in p.relative_to(service_dir).parts))
    extra = f"\n... and {len(names) - MAX_FILES} more" if len(names) > MAX_FILES else ""
    return "\n".join(names[:MAX_FILES]) + extra
