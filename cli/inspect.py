"""`orchestra inspect PATH [--diff FILE]`: the code analysis agent's checks, in the terminal."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from agents.analysis.deps import dependency_findings
from agents.analysis.review import review_diff
from agents.analysis.risk import classify_risk
from agents.analysis.security import security_findings
from agents.analysis.structure import structure_findings
from agents.findings import Finding, Severity
from cli.common import connect
from orchestra.errors import OrchestraError
from orchestra.llm import LLM
from orchestra.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="dependency, structure and security findings; risk and review of a diff",
        description="Check a repository like the analyze stage does beyond lint: undeclared and unused "
                    "dependencies, structure problems, bandit findings. With --diff (a file, - for stdin, "
                    "or git:REV for `git diff REV` in PATH): the change's risk and a review.")
    parser.add_argument("path", type=Path, help="the repository (or service) directory")
    parser.add_argument("--diff", help="unified diff: a file, '-' for stdin, or git:REV")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    root = args.path.resolve()
    if not root.is_dir():
        raise OrchestraError(f"{args.path} is not a directory", hint="pass the repository's directory")
    findings = dependency_findings(root) + structure_findings(root) + security_findings(root)
    if args.diff:
        diff = _read_diff(args.diff, root)
        risk = classify_risk([], diff)
        print(risk.summary())
        llm = LLM(settings, redis=connect(settings)) if settings.llm_configured else None
        review = review_diff(diff, llm=llm)
        print(f"review: {review.note}" + (f" — {review.summary}" if review.summary else ""))
        findings += review.findings
    for finding in findings:
        print(_line(finding))
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    print(f"{errors} error(s), {len(findings) - errors} other finding(s)")
    return 1 if errors else 0


def _read_diff(spec: str, root: Path) -> str:
    if spec == "-":
        return sys.stdin.read()
    if spec.startswith("git:"):
        proc = subprocess.run(["git", "diff", spec[4:]], cwd=root, capture_output=True, text=True,
                              timeout=60, check=False)
        if proc.returncode != 0:
            raise OrchestraError(f"git diff {spec[4:]} failed: {proc.stderr.strip()}",
                                 hint="pass a revision that exists, e.g. git:HEAD~1")
        return proc.stdout
    path = Path(spec)
    if not path.is_file():
        raise OrchestraError(f"no diff file {spec}", hint="pass a file, '-' for stdin, or git:REV")
    return path.read_text()


def _line(finding: Finding) -> str:
    tip = f"  -> {finding.suggestion}" if finding.suggestion else ""
    return f"{finding.severity.value:7} {finding.where()}: [{finding.tool} {finding.rule}] {finding.message}{tip}"
