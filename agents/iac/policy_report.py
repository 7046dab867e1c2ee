"""What checkov found, read: its JSON report sorted into the findings that block a plan and the others.

* Which checks block: open-source checkov gives no severity offline (severity comes from the Prisma
  platform), so :data:`BLOCKING` is this project's reviewed list (admin ports open to the world, public
  S3, unencrypted state-bearing storage, administrator IAM policies, credentials in code). A finding that
  checkov itself marks HIGH or CRITICAL blocks too. Every other finding is listed, capped, and passes.
* Its output is the repository's words: only check id, file, line and resource address are read, each
  capped and stripped of backticks and control characters (:func:`clean`; the Slack renderer escapes the rest).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestra.errors import StageFailed

MAX_LISTED = 10  # check ids of the passing findings named in the thread
MAX_KEPT = 50  # findings kept in the event's data
MAX_OUTPUT = 20_000_000  # checkov's JSON beyond this is not read
HIGH = frozenset({"HIGH", "CRITICAL"})

# Reviewed: the checks treated as high severity, each with what to do about it.
BLOCKING: dict[str, str] = {
    "CKV_AWS_24": "a security group open to 0.0.0.0/0 on port 22 (SSH): allow only known addresses",
    "CKV_AWS_25": "a security group open to 0.0.0.0/0 on port 3389 (RDP): allow only known addresses",
    "CKV_AWS_277": "a security group open to 0.0.0.0/0 on every port: open only the ports served",
    "CKV_AWS_20": "an S3 bucket whose ACL lets anyone read it: make the ACL private",
    "CKV_AWS_57": "an S3 bucket whose ACL lets anyone write to it: make the ACL private",
    "CKV_AWS_70": "an S3 bucket policy that allows any principal: name the principals",
    "CKV_AWS_16": "an RDS instance not encrypted at rest: set storage_encrypted = true",
    "CKV_AWS_17": "an RDS instance reachable from the internet: set publicly_accessible = false",
    "CKV_AWS_3": "an EBS volume not encrypted: set encrypted = true",
    "CKV_AWS_8": "an instance's or launch configuration's EBS not encrypted: set encrypted = true on its block devices",
    "CKV_AWS_42": "an EFS file system not encrypted: set encrypted = true",
    "CKV_AWS_1": "an IAM policy document granting \"*\" on \"*\" (administrator): grant the actions needed",
    "CKV_AWS_62": "an IAM policy granting \"*\" on \"*\" (administrator): grant the actions needed",
    "CKV_AWS_41": "AWS access keys written in the provider block: use the worker's credentials chain",
    "CKV_AWS_45": "credentials in a Lambda function's environment: keep them in Secrets Manager",
    "CKV_AWS_46": "credentials in an instance's user data: keep them in Secrets Manager",
    "CKV_GCP_102": "a Cloud Run service anyone may invoke (allUsers or allAuthenticatedUsers): name the invokers",
    "CKV_GCP_101": "an Artifact Registry repository anyone may read (allUsers or allAuthenticatedUsers): name "
                   "the readers",
    "CKV_AZURE_137": "a container registry with its admin account (a shared password) on: pull with an identity",
    "CKV_AZURE_138": "a container registry anyone may pull from: set anonymous_pull_enabled = false",
}


@dataclass(frozen=True)
class Finding:
    check: str
    file: str
    line: int
    resource: str
    title: str
    skipped: bool = False  # switched off by a checkov:skip comment in the file

    def shown(self) -> str:
        why = BLOCKING.get(self.check, self.title)
        note = " (a `checkov:skip` comment does not switch off a blocking check)" if self.skipped else ""
        return f"{self.file}:{self.line}: {self.check} on {self.resource}: {why}{note}"

    def data(self) -> dict[str, Any]:
        return {"check": self.check, "file": self.file, "line": self.line, "resource": self.resource,
                "title": self.title, "skipped": self.skipped}


@dataclass
class Report:
    blocking: list[Finding] = field(default_factory=list)
    others: list[Finding] = field(default_factory=list)
    passed: int = 0
    version: str = ""

    def line(self) -> str:
        """``checkov 3.3.30: 0 blocking, 25 other findings (CKV_AWS_2 ×1, ...)`` for the thread."""
        counts = Counter(f.check for f in self.others)
        named = ", ".join(f"{c} ×{n}" for c, n in sorted(counts.items())[:MAX_LISTED])
        more = f", {len(counts) - MAX_LISTED} more checks" if len(counts) > MAX_LISTED else ""
        listed = f" ({named}{more})" if counts else ""
        return (f"checkov {self.version}: {len(self.blocking)} blocking, {len(self.others)} other finding(s)"
                f"{listed}, {self.passed} passed")

    def data(self) -> dict[str, Any]:
        return {"checkov": self.version, "passed": self.passed, "blocking": [f.data() for f in self.blocking],
                "others": [f.data() for f in self.others[:MAX_KEPT]], "others_count": len(self.others)}


def parse(out: str, shown: str) -> Report:
    """checkov's JSON (one report, or a list of them): its findings sorted into blocking and others."""
    try:
        loaded = json.loads(out[:MAX_OUTPUT]) if out.strip() else {}
    except ValueError as exc:
        raise StageFailed(f"checkov gave no readable report: {clean(out[-300:], 300)}",
                          hint="run checkov on the folder by hand to see why; nothing was planned") from exc
    reports = loaded if isinstance(loaded, list) else [loaded]
    report = Report()
    for part in reports:
        if not isinstance(part, dict):
            continue
        summary = part.get("summary") or {}
        report.version = clean(summary.get("checkov_version", report.version), 20)
        report.passed += int(summary.get("passed") or 0)
        results = part.get("results") or {}
        for kind in ("failed_checks", "skipped_checks"):
            for raw in results.get(kind) or []:
                finding = _finding(raw, shown, skipped=kind == "skipped_checks")
                severity = str(raw.get("severity") or "").upper()
                if finding.check in BLOCKING or severity in HIGH:
                    report.blocking.append(finding)
                elif not finding.skipped:
                    report.others.append(finding)
    report.blocking.sort(key=lambda f: (f.file, f.line, f.check))
    report.others.sort(key=lambda f: (f.file, f.line, f.check))
    return report


def _finding(raw: dict[str, Any], shown: str, *, skipped: bool) -> Finding:
    lines = raw.get("file_line_range") or [0]
    try:
        line = int(lines[0])
    except (TypeError, ValueError, IndexError):
        line = 0
    where = clean(str(raw.get("file_path") or "?").lstrip("/"), 200)
    return Finding(check=clean(raw.get("check_id") or "?", 40), file=f"{shown.rstrip('/')}/{where}", line=line,
                   resource=clean(raw.get("resource") or "?", 120), title=clean(raw.get("check_name") or "", 160),
                   skipped=skipped)


def clean(text: object, limit: int) -> str:
    """Hostile text for one line of the thread: no control characters or backticks, at most ``limit``."""
    flat = re.sub(r"[\x00-\x1f\x7f`]", " ", str(text))
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"
