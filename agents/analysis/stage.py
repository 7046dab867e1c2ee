"""The code analysis stage: what the code is, how risky the change is, and whether it may go further.

The gate fails on errors only: syntax errors, undefined names, imports
missing from the requirements and imports of local modules that do not
exist, each with file and line. Lint style, security findings below high
severity, structure remarks and the review are warnings shown to the user.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from agents.analysis.changes import change_of
from agents.analysis.deps import dependency_findings
from agents.analysis.javascript import javascript_findings, packages
from agents.analysis.review import review_diff
from agents.analysis.risk import Risk, RiskLevel, classify_risk
from agents.analysis.route import record as record_route
from agents.analysis.security import security_findings
from agents.analysis.structure import structure_findings
from agents.context import AgentContext, StageResult
from agents.findings import Finding, Severity
from agents.migrations.found import note as note_migrations
from agents.tools import run_tool, tool_path
from orchestra.events import EventType
from orchestra.llm import LLM
from orchestra.store import RunStore

logger = logging.getLogger(__name__)

# The rules whose findings mean the code cannot work: syntax errors, undefined names,
# comparisons and statements that are always wrong.
GATE_RULES = ("E9", "F63", "F7", "F82", "invalid-syntax")
RUFF_TIMEOUT_S = 120


def run(ctx: AgentContext) -> StageResult:
    """Detect the stack, lint, check declared dependencies, and decide the gate."""
    project = ctx.config.project
    ctx.progress(f"analyzing {project.name}: {project.language}"
                 + (f"/{project.framework}" if project.framework else ""))
    findings: list[Finding] = []
    node_packages = packages(ctx.workspace)
    if node_packages:
        ctx.progress(f"JavaScript: ESLint and imports in {len(node_packages)} package(s)")
        findings += javascript_findings(ctx.workspace, ctx.settings)
    if project.language == "python":
        findings += ruff_findings(ctx.workspace, ctx)
        findings += dependency_findings(ctx.workspace)
        findings += structure_findings(ctx.workspace)
        findings += security_findings(ctx.workspace)
    elif not node_packages:
        ctx.progress(f"no linter for {project.language} yet: lint skipped")
    risk, review_note = assess_change(ctx, findings)
    note_migrations(ctx)  # Run.migrations (the migrate stage) and the thread's list, before any approval is asked
    result = verdict(findings, language=project.language, framework=project.framework)
    result.data.update(risk=risk.level.value, risk_reasons=risk.reasons, review=review_note)
    if result.passed:  # the path a change that may go further takes (route_decided)
        record_route(ctx, risk)
    return result


def assess_change(ctx: AgentContext, findings: list[Finding]) -> tuple[Risk, str]:
    """Classify the change's risk (the router routes on it) and review its diff; add review findings."""
    change = change_of(ctx)
    if change is None:
        risk = Risk(level=RiskLevel.MEDIUM, reasons=["no earlier commit to compare with: treated as app code"])
        note = "no diff to review"
    else:
        risk = classify_risk(change.files, change.diff)
        review = review_diff(change.diff, llm=LLM.from_settings(ctx.settings, redis=ctx.redis, bus=ctx.bus),
                             run_id=ctx.run.id)
        findings += review.findings
        note = review.note or f"reviewed by the {review.source}"
    RunStore(ctx.redis).update(ctx.run.id, risk=risk.level.value)
    ctx.emit(EventType.RISK_CLASSIFIED, **risk.event_data())
    return risk, note


def ruff_findings(root: Path, ctx: AgentContext) -> list[Finding]:
    """Ruff's findings over the repository, with the gate's rules always switched on."""
    proc = run_tool([tool_path("ruff"), "check", "--output-format", "json", "--no-cache", "--exit-zero",
                     "--extend-select", ",".join(r for r in GATE_RULES if r[0].isupper()), "."],
                    cwd=root, settings=ctx.settings, timeout=RUFF_TIMEOUT_S)
    if proc.returncode != 0:
        logger.warning("run %s: ruff exited %s: %s", ctx.run.id, proc.returncode, proc.stderr[-500:])
        return [Finding(tool="ruff", rule="ruff-error", message=proc.stderr.strip()[-300:],
                        severity=Severity.WARNING)]
    return [_ruff_finding(item, root) for item in json.loads(proc.stdout or "[]")]


def _ruff_finding(item: dict, root: Path) -> Finding:
    code = item.get("code") or "invalid-syntax"
    gate = code.startswith(GATE_RULES)
    message = item["message"] if code != "invalid-syntax" else f"syntax error: {item['message']}"
    return Finding(tool="ruff", rule=code, message=message,
                   file=str(Path(item["filename"]).resolve().relative_to(root.resolve())),
                   line=item["location"]["row"],
                   severity=Severity.ERROR if gate else Severity.WARNING,
                   suggestion=(item.get("fix") or {}).get("message"))


def verdict(findings: list[Finding], **facts: str | None) -> StageResult:
    """The gate's decision, explained: passed unless a finding is an error."""
    errors = [f for f in findings if f.severity == Severity.ERROR]
    warnings = [f for f in findings if f.severity == Severity.WARNING]
    if errors:
        first = errors[0].one_line()
        summary = f"{len(errors)} error(s) block the pipeline; first: {first}"
        gate = "failed: errors must be fixed before build and deploy"
    else:
        summary = f"code analysis passed ({len(warnings)} warning(s))"
        gate = "passed: no errors" + (", warnings are advisory" if warnings else "")
    return StageResult(not errors, summary, {
        **facts, "gate": gate, "errors": len(errors), "warnings": len(warnings),
        "findings": [f.model_dump(mode="json") for f in errors + warnings][:200],
    })
