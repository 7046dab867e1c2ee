"""``npm audit`` of each Node service's lock file: known vulnerabilities in the locked dependencies.

``npm audit --json --package-lock-only`` reads package-lock.json (nothing is installed, no script runs) and
asks the registry's bulk advisory service about every locked version. The registry is the one npm resolves
for the service: its .npmrc, the worker's npm configuration, ``npm_config_registry`` in the tool environment.
High and critical vulnerabilities fail the gate, moderate and low ones are listed. When the advisory service
cannot be asked (refused, offline, too slow) the gate says so as a warning and does not block: the code is
not worse for the registry being down, but nobody may read the silence as "no vulnerabilities".

Everything in npm's answer comes from the registry (a hostile one included): titles, names and URLs are
stripped of control characters and cut short here; the Slack views escape them as text.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from agents.findings import Finding, Severity
from agents.testing.node import LOCKFILES
from agents.tools import run_tool
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

AUDIT_TIMEOUT_S = 120
BLOCKING = {"high", "critical"}
MAX_TEXT = 200  # characters of one title, name or URL from the registry
_ADVISORY_PATH = re.compile(r"(https?://\S+?)/-/npm/v1/security\S*")


def audit_findings(homes: list[Path], root: Path, settings: Settings,
                   timeout: float = AUDIT_TIMEOUT_S) -> list[Finding]:
    """Findings of ``npm audit`` for every package folder with a lock file."""
    findings: list[Finding] = []
    for home in homes:
        lock = next((home / name for name in LOCKFILES if (home / name).is_file()), None)
        if lock is not None:
            findings += _audit(home, lock, root, settings, timeout)
    return findings


def _audit(home: Path, lock: Path, root: Path, settings: Settings, timeout: float) -> list[Finding]:
    if shutil.which("npm", path=settings.tool_env.get("PATH")) is None:
        return [Finding(tool="npm-audit", rule="npm-audit-unavailable", file=str(lock.relative_to(root)),
                        severity=Severity.WARNING,
                        message="npm is not installed on this worker: dependencies were not checked for known "
                                "vulnerabilities", suggestion="apt-get install npm")]
    # A cache of its own for each audit: npm keeps advisories in its cache by package and advisory id alone,
    # so a registry a repository names in its .npmrc could otherwise plant an advisory's severity for others.
    settings.cache.mkdir(parents=True, exist_ok=True)
    cache = tempfile.mkdtemp(prefix="npm-audit-", dir=settings.cache)
    try:
        return _run_audit(home, lock, root, settings, cache, timeout)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _run_audit(home: Path, lock: Path, root: Path, settings: Settings, cache: str,
               timeout: float) -> list[Finding]:
    env = {"npm_config_update_notifier": "false", "npm_config_fund": "false", "npm_config_fetch_retries": "1",
           "npm_config_cache": cache, "NO_COLOR": "1"}
    if settings.build_ca_bundle is not None:
        env["NPM_CONFIG_CAFILE"] = str(settings.build_ca_bundle)
    try:
        proc = run_tool(["npm", "audit", "--json", "--package-lock-only", "--ignore-scripts"], cwd=home,
                        settings=settings, timeout=timeout, extra_env=env)
    except OrchestraError as exc:  # the advisory service did not answer in time
        return [_unchecked(lock, root, registry(home, settings), exc.message)]
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict) or not isinstance(report.get("vulnerabilities"), dict):
        why = _why(report, proc.stderr)
        where = _ADVISORY_PATH.search(str((report or {}).get("uri") or "") if isinstance(report, dict) else "")
        return [_unchecked(lock, root, where.group(1) if where else registry(home, settings), why)]
    return [_finding(vuln, home, lock, root) for vuln in report["vulnerabilities"].values() if isinstance(vuln, dict)]


def registry(home: Path, settings: Settings) -> str:
    """The registry npm uses in ``home`` (for the message when its advisory service failed)."""
    try:
        proc = run_tool(["npm", "config", "get", "registry"], cwd=home, settings=settings, timeout=30,
                        extra_env={"npm_config_update_notifier": "false"})
    except OrchestraError:
        return "the npm registry"
    return clean(proc.stdout.strip().rstrip("/")) or "the npm registry"


def _why(report: object, stderr: str) -> str:
    if isinstance(report, dict) and report.get("message"):
        status = report.get("statusCode")
        return clean(f"HTTP {status}" if status else str(report["message"]))
    lines = [ln.removeprefix("npm error ").removeprefix("npm warn audit ") for ln in stderr.splitlines()
             if ln.startswith(("npm error", "npm warn audit")) and "complete log" not in ln]
    return clean(lines[0] if lines else "npm audit gave no report")


def _unchecked(lock: Path, root: Path, where: str, why: str) -> Finding:
    return Finding(tool="npm-audit", rule="npm-audit-unavailable", file=str(lock.relative_to(root)),
                   severity=Severity.WARNING,
                   message=f"npm audit could not reach {where}'s advisory service ({why}): dependencies were not "
                           "checked for known vulnerabilities",
                   suggestion="check the worker reaches the registry (or set the registry in the service's .npmrc "
                              "to one with an advisory service), then run the pipeline again")


def _finding(vuln: dict[str, Any], home: Path, lock: Path, root: Path) -> Finding:
    name = clean(vuln.get("name"))
    severity = str(vuln.get("severity") or "unknown")
    direct = bool(vuln.get("isDirect"))
    file = (home / "package.json") if direct else lock
    advisories, through = [], []
    for via in vuln.get("via") or []:
        if isinstance(via, dict):
            advisories.append(f"{clean(via.get('title'))} ({_url(via.get('url'))}, {clean(via.get('severity'))},"
                              f" affects {clean(via.get('range'))})")
        else:
            through.append(clean(via))
    installed = clean(vuln.get("range")) or "locked version"
    what = "; ".join(advisories) or f"vulnerable through {', '.join(through)}"
    message = f"{severity} vulnerability in {name} {installed}{' (direct dependency)' if direct else ''}: {what}"
    return Finding(tool="npm-audit", rule=f"npm-audit-{clean(severity)}", file=str(file.relative_to(root)),
                   message=message, suggestion=_fix(vuln.get("fixAvailable"), home, root),
                   severity=Severity.ERROR if severity in BLOCKING else Severity.WARNING)


def _fix(fix: object, home: Path, root: Path) -> str:
    where = str(home.relative_to(root)) or "."
    if isinstance(fix, dict):
        major = " (a semver-major upgrade: check its changelog)" if fix.get("isSemVerMajor") else ""
        return f"npm install {clean(fix.get('name'))}@{clean(fix.get('version'))} in {where}{major}"
    if fix:
        return f"npm audit fix in {where}, then commit package-lock.json"
    return "no fixed version is published yet: replace the package, or accept the risk until one is"


def _url(url: object) -> str:
    text = clean(url)
    return text if re.fullmatch(r"https://[^\s|<>]+", text) else "no advisory URL"


def clean(text: object) -> str:
    """Registry text made safe to show: no control or format characters, whitespace collapsed, cut short."""
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in str(text or ""))
    kept = " ".join(kept.split())
    return kept if len(kept) <= MAX_TEXT else kept[:MAX_TEXT - 1] + "…"
