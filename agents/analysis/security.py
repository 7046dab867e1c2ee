"""Security findings for Python code, from bandit.

High-severity issues bandit is at least moderately sure of fail the gate; medium ones are
warnings; low ones are informational. ``assert`` in tests (B101) is not a finding.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agents.findings import Finding, Severity
from agents.pysource import SKIP_DIRS, is_test_file

logger = logging.getLogger(__name__)

TOOL = "bandit"
TIMEOUT_S = 300
# What to do about the findings bandit reports most often.
SUGGESTIONS: dict[str, str] = {
    "B101": "raise an exception instead of assert for checks that must hold in production",
    "B102": "do not exec() strings; call the code directly",
    "B105": "read the secret from the environment or a secret store, not from the source",
    "B106": "read the secret from the environment or a secret store, not from the source",
    "B107": "do not give secrets a default value in code",
    "B108": "use tempfile.mkdtemp()/NamedTemporaryFile instead of a fixed /tmp path",
    "B110": "log the exception instead of silently passing",
    "B201": "never run Flask with debug=True outside development",
    "B301": "do not unpickle data you do not trust; use JSON",
    "B307": "use ast.literal_eval() instead of eval()",
    "B310": "allow only http(s) URLs before calling urlopen()",
    "B324": "use hashlib.sha256 (or pass usedforsecurity=False for non-security hashes)",
    "B501": "keep certificate verification on (verify=True)",
    "B506": "use yaml.safe_load()",
    "B602": "pass a list of arguments and shell=False",
    "B603": "make sure the arguments cannot come from untrusted input",
    "B605": "use subprocess.run([...]) without a shell",
    "B608": "use query parameters instead of building SQL from strings",
    "B113": "pass a timeout= to requests calls",
    "B104": "bind to 127.0.0.1 or a configured address instead of all interfaces",
}
SEVERITY = {"HIGH": Severity.ERROR, "MEDIUM": Severity.WARNING, "LOW": Severity.INFO}


def security_findings(root: Path, *, timeout_s: float = TIMEOUT_S) -> list[Finding]:
    """Run bandit over the repository's Python code and turn its results into findings.

    When bandit itself cannot run, the result is one warning saying so (the scan is missing, the
    code is not to blame).
    """
    root = root.resolve()
    excludes = ",".join(f"*/{d}/*" for d in sorted(SKIP_DIRS))
    cmd = [sys.executable, "-m", "bandit", "-r", ".", "-f", "json", "-q", "-x", excludes]
    try:
        # A bare environment: the scanner needs no token or key of ours.
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout_s,
                              check=False, env={"PATH": os.defpath})
    except subprocess.TimeoutExpired:
        return [_scan_failed(f"bandit did not finish within {timeout_s:.0f}s")]
    try:
        report = json.loads(proc.stdout) if proc.returncode in (0, 1) else None
    except json.JSONDecodeError:
        report = None
    if report is None:
        return [_scan_failed(f"bandit failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")]
    for error in report.get("errors", []):
        logger.debug("bandit could not scan %s: %s", error.get("filename"), error.get("reason"))
    findings = [_finding(r) for r in report.get("results", [])]
    return [f for f in findings if not (f.rule == "B101" and is_test_file(f.file or ""))]


def _scan_failed(message: str) -> Finding:
    logger.warning("security scan not done: %s", message)
    return Finding(tool=TOOL, rule="scan-failed", message=message, severity=Severity.WARNING,
                   suggestion="check that bandit is installed on the worker (requirements.txt)")


def _finding(result: dict[str, Any]) -> Finding:
    rule = result["test_id"]
    severity = SEVERITY.get(result.get("issue_severity", "LOW"), Severity.INFO)
    if severity is Severity.ERROR and result.get("issue_confidence") == "LOW":
        severity = Severity.WARNING  # bandit itself is unsure: report, do not block
    file = Path(result["filename"]).as_posix().removeprefix("./")
    suggestion = SUGGESTIONS.get(rule) or f"see {result.get('more_info', 'the bandit documentation')}"
    message = f"{result['issue_text']} ({result.get('test_name')})"
    return Finding(tool=TOOL, rule=rule, message=message, file=file, line=result.get("line_number"),
                   severity=severity, suggestion=suggestion)
